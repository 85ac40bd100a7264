"""Build inputs from elsewhere, made local before a build plans (buildx's `loadInputs`).

- a git context (`https://host/repo.git#ref:subdir`, `git@host:repo.git`): checked out by
  the ADD-git fetcher (`builder/sources.fetch_git`, kept per commit under `$ROOT/cache/git`);
  the Dockerfile is read from the checkout unless `-f` is absolute or `-`;
- an http(s) context: downloaded by the ADD-url fetcher (`fetch_http`, revalidated with
  ETag/Last-Modified); a tar archive (plain, gzip, bzip2, xz) is unpacked and is the
  context, anything else is the Dockerfile, with an empty context (BuildKit's
  `DetectHTTPContext`);
- a `TarContext` (`docker build - < ctx.tar`): unpacked;
- `-f URL`: the Dockerfile downloaded (at most 2 MB, as buildx);
- `--build-context NAME=<git URL>`: the checkout; `NAME=<http URL>`: a directory holding
  the download as the file `context` (BuildKit's named http context).

Unpacked archives go to a private scratch directory under `$ROOT/cache/inputs`, removed
when the build ends; one a killed build left is removed by the next build (its lock is
free). Entries that could escape the directory (absolute names, `..`, links pointing out)
are refused, as are device nodes and FIFOs; modes are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pybuild.errors import UserError
from pybuild.gitref import GitRef, is_http_url, parse_git_ref
from pybuild.request import BuildRequest, TarContext

if TYPE_CHECKING:
    from pybuild.frontend.resolver import NamedContext
    from pybuild.layers.decompress import ExpansionLimits
    from pybuild.root import Root

MAX_DOCKERFILE = 2 << 20  # buildx's maxDockerfileSize
_HEAD = 1024  # bytes BuildKit reads to tell an archive from a Dockerfile
_STALE_UNLOCKED = 3600.0  # a scratch dir without a lock this old was never finished


# -- sniffing -------------------------------------------------------------------------------


def is_archive(head: bytes) -> bool:
    """BuildKit's `isArchive`: a bzip2, gzip or xz stream, or a valid tar header."""
    if head.startswith((b"BZh", b"\x1f\x8b\x08", b"\xfd7zXZ\x00")):
        return True
    if len(head) < 512:
        return False
    block = head[:512]
    try:
        stored = int(block[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = (sum(b - 256 if b > 127 else b for b in block[:148]) + 8 * 32
              + sum(b - 256 if b > 127 else b for b in block[156:]))
    return stored in (unsigned, signed) and any(block[:100])


class Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff them)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[:len(data)] = data
        return len(data)


def read_head(stream: IO[bytes], size: int = _HEAD) -> bytes:
    head = b""
    while len(head) < size:
        chunk = stream.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


# -- unpacking ------------------------------------------------------------------------------


def _safe_name(name: str) -> str | None:
    """The archive name as a relative path inside the destination; None for the root
    itself. Names that climb out (`..`) are refused."""
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
    if ".." in parts:
        raise UserError(f"context archive entry {name!r} climbs out of the context",
                        code="bad-context")
    return "/".join(parts) or None


def _no_link_on_the_way(dest: Path, rel: str, name: str) -> None:
    """Nothing is ever written through a symbolic link the archive made earlier."""
    here = dest
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            here.mkdir(mode=0o755)
            continue
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise UserError(f"context archive entry {name!r} goes through "
                            f"{here.relative_to(dest)}, which is not a directory",
                            code="bad-context")


def _clear(path: Path) -> None:
    """Make room for an entry (a later entry of the same name wins, as on extraction)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def unpack(stream: IO[bytes], dest: Path, what: str,
           limits: ExpansionLimits | None = None) -> None:
    """Unpack a tar stream (plain, gzip, bzip2, xz or zstd; decompression bounded by
    `layers.decompress`' limits) into the empty directory `dest`.
    Regular files, directories, symbolic links (kept as they are, wherever they point: a
    context copies links, never follows them) and hard links to earlier files; modes
    (set-id bits too: `dest` is private) and mtimes kept, owners not. Names that climb
    out, entries written through a link, hard links outside, device nodes and FIFOs are
    refused."""
    import tarfile

    from pybuild.layers.decompress import DEFAULT_LIMITS, decompressed

    dirs: list[tuple[Path, int, float]] = []
    try:
        # Bounded as layers are: a gzip/bzip2/xz/zstd bomb is refused, not unpacked.
        plain = decompressed(stream, archive_formats=True, what=what,  # type: ignore[arg-type]
                             limits=limits or DEFAULT_LIMITS)
        with plain, tarfile.open(fileobj=plain, mode="r|") as tar:
            for member in tar:
                rel = _safe_name(member.name)
                if rel is None:
                    continue
                _no_link_on_the_way(dest, rel, member.name)
                target = dest / rel
                if member.isdir():
                    if not target.is_dir() or target.is_symlink():
                        _clear(target)
                        target.mkdir(mode=0o700)
                    dirs.append((target, member.mode & 0o7777, float(member.mtime)))
                elif member.isreg():
                    _clear(target)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        src = tar.extractfile(member)
                        assert src is not None
                        shutil.copyfileobj(src, out, 1 << 20)
                        os.fchmod(out.fileno(), member.mode & 0o7777)
                    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
                elif member.issym():
                    _clear(target)
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    source_rel = _safe_name(member.linkname)
                    source = dest / source_rel if source_rel else dest
                    if source_rel is None or not source.is_file() or source.is_symlink():
                        raise UserError(f"context archive entry {member.name!r} is a hard "
                                        f"link to {member.linkname!r}, which is not an "
                                        "earlier file of the archive", code="bad-context")
                    _no_link_on_the_way(dest, source_rel, member.linkname)
                    _clear(target)
                    os.link(source, target)
                else:
                    raise UserError(f"context archive entry {member.name!r} is a device "
                                    "node or a FIFO, which a build context cannot hold",
                                    code="bad-context")
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise UserError(f"{what} is not a readable tar archive ({exc})",
                        code="bad-context") from None
    except OSError as exc:
        raise UserError(f"cannot unpack {what}: {exc.strerror or exc}",
                        code="bad-context") from None
    for path, mode, mtime in reversed(dirs):  # children first: a 0555 dir is filled
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))


# -- scratch space --------------------------------------------------------------------------


@contextlib.contextmanager
def scratch(root: Root) -> Iterator[Path]:
    """A private directory for this build's unpacked inputs, held by a lock."""
    base = root.cache_dir / "inputs"
    base.mkdir(parents=True, exist_ok=True)
    _sweep(base)
    path = Path(tempfile.mkdtemp(dir=base, prefix="build-"))
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def _sweep(base: Path) -> None:
    """Remove what killed builds left: directories whose lock nobody holds."""
    for entry in base.iterdir():
        lock = entry / "lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > _STALE_UNLOCKED:
                    shutil.rmtree(entry, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        os.close(fd)


class _Scratch:
    """Scratch directories made on first need (a local build makes none)."""

    def __init__(self, root: Root, stack: contextlib.ExitStack) -> None:
        self.root = root
        self.stack = stack
        self.base: Path | None = None
        self.count = 0

    def new(self, name: str) -> Path:
        if self.base is None:
            self.base = self.stack.enter_context(scratch(self.root))
        self.count += 1
        path = self.base / f"{self.count}-{name}"
        path.mkdir(mode=0o700)
        return path


# -- fetching -------------------------------------------------------------------------------


def _fetch_git(root: Root, git: GitRef) -> str:
    from pybuild.builder.sources import fetch_git

    return fetch_git(str(root.cache_dir), git.remote, ref=git.ref, subdir=git.subdir,
                     keep_git_dir=git.keep_git_dir, checksum=git.checksum,
                     submodules=git.submodules).root


def _fetch_http(root: Root, url: str, filename: str, refresh: bool) -> Path:
    """The download, as `<dir>/<filename>`."""
    from pybuild.builder.sources import fetch_http

    fetched = fetch_http(str(root.cache_dir), url, filename=filename, perm=0o644,
                         refresh=refresh)
    return Path(fetched.root) / filename


def _read_dockerfile(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_DOCKERFILE:
            raise UserError(f"Dockerfile {what} is bigger than allowed ({MAX_DOCKERFILE} "
                            "bytes)", code="bad-dockerfile")
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"Dockerfile not found: {what}", code="not-found",
                        hint="pass -f with the Dockerfile's path inside the context") from None
    except IsADirectoryError:
        raise UserError(f"{what} is a directory, not a Dockerfile") from None


def _dockerfile_in(context: str, dockerfile: str, what: str) -> tuple[bytes, str]:
    """The Dockerfile named relative to a fetched context (default: Dockerfile, else
    dockerfile, as BuildKit's `handleLowercaseDockerfile`)."""
    rel = dockerfile or "Dockerfile"
    parts = [p for p in rel.replace("\\", "/").split("/") if p and p != "."]
    if ".." in parts:
        raise UserError(f"-f {rel}: the Dockerfile must be inside the {what} context")
    path = Path(context, *parts)
    if not dockerfile and not path.exists() and Path(context, "dockerfile").exists():
        path, rel = Path(context, "dockerfile"), "dockerfile"
    return _read_dockerfile(path, f"{rel} in {what}"), rel


def _unpack_context(stream: IO[bytes], scratch: _Scratch, what: str) -> str:
    dest = scratch.new("context")
    head = read_head(stream)
    if head:
        unpack(io.BufferedReader(Prefixed(head, stream)), dest, what)
    return str(dest)


def _remote_context(req: BuildRequest, root: Root, scratch: _Scratch,
                    url: str) -> BuildRequest:
    from pybuild.builder.sources import redact

    dockerfile = str(req.dockerfile or "")
    own_dockerfile = req.dockerfile_data is None and not os.path.isabs(dockerfile) and \
        not is_http_url(dockerfile)
    git = parse_git_ref(url)
    if git is not None:
        context = _fetch_git(root, git)
        if not own_dockerfile:
            return dataclasses.replace(req, context=context)
        data, name = _dockerfile_in(context, dockerfile, redact(url))
        return dataclasses.replace(req, context=context, dockerfile=name,
                                   dockerfile_data=data)
    download = _fetch_http(root, url, "context", req.no_cache)
    with open(download, "rb") as f:
        head = read_head(f)
        if is_archive(head):
            f.seek(0)
            context = _unpack_context(f, scratch, f"context {redact(url)}")
            if not own_dockerfile:
                return dataclasses.replace(req, context=context)
            data, name = _dockerfile_in(context, dockerfile, redact(url))
            return dataclasses.replace(req, context=context, dockerfile=name,
                                       dockerfile_data=data)
    # Not an archive: the download is the Dockerfile; the context holds just it.
    if not own_dockerfile:
        return dataclasses.replace(req, context=str(download.parent))
    return dataclasses.replace(req, context=str(download.parent), dockerfile="context",
                               dockerfile_data=_read_dockerfile(download, redact(url)))


def _named(root: Root, name: str, nc: NamedContext, refresh: bool) -> NamedContext:
    if nc.kind == "git":
        git = parse_git_ref(nc.value)
        if git is None:
            raise UserError(f"--build-context {name}={nc.value}: not a git URL")
        return dataclasses.replace(nc, kind="local", value=_fetch_git(root, git))
    if nc.kind == "http":
        path = _fetch_http(root, nc.value, "context", refresh)
        return dataclasses.replace(nc, kind="local", value=str(path.parent))
    return nc


@contextlib.contextmanager
def local_inputs(req: BuildRequest, root: Root) -> Iterator[BuildRequest]:
    """`req` with every input local: the context a directory, a downloaded Dockerfile
    as `dockerfile_data`, named git/http contexts as directories. What was unpacked for
    it is removed when the block ends."""
    context = req.context
    remote_named = any(nc.kind in ("git", "http") for _, nc in req.named_contexts)
    local = isinstance(context, (str, Path)) and (
        os.path.isdir(context) or not _is_remote(str(context)))
    if local and not is_http_url(str(req.dockerfile or "")) and not remote_named:
        yield req  # the common case: nothing to fetch, no scratch dir
        return
    with contextlib.ExitStack() as stack:
        scratch = _Scratch(root, stack)
        if isinstance(context, TarContext):
            unpacked = _unpack_context(context.stream, scratch, "the context archive")
            req = dataclasses.replace(req, context=unpacked)
            dockerfile = str(req.dockerfile or "")
            if (req.dockerfile_data is None and not os.path.isabs(dockerfile)
                    and not is_http_url(dockerfile)):  # buildx: -f is inside the archive
                data, name = _dockerfile_in(unpacked, dockerfile, "the context archive")
                req = dataclasses.replace(req, dockerfile=name, dockerfile_data=data)
        elif not local:
            req = _remote_context(req, root, scratch, str(context))
        dockerfile = str(req.dockerfile or "")
        if req.dockerfile_data is None and is_http_url(dockerfile):
            from pybuild.builder.sources import redact

            path = _fetch_http(root, dockerfile, "Dockerfile", req.no_cache)
            req = dataclasses.replace(req, dockerfile="Dockerfile",
                                      dockerfile_data=_read_dockerfile(path,
                                                                       redact(dockerfile)))
        if remote_named:
            req = dataclasses.replace(req, named_contexts=tuple(
                (name, _named(root, name, nc, req.no_cache))
                for name, nc in req.named_contexts))
        yield req


def _is_remote(text: str) -> bool:
    from pybuild.gitref import is_remote_url

    return is_remote_url(text)

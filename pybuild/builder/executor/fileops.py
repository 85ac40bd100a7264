"""File actions (COPY/ADD/WORKDIR/heredoc files) applied on a mounted rootfs.

Runs inside the sandbox namespace, on the overlay of the step, so the upper dir then holds
exactly what changed. Semantics follow BuildKit's FileOp (fsutil copy): directory sources
copy their contents, a trailing slash or an existing directory makes the dest a directory,
missing parents are created, existing directories keep their owner and mode.

`COPY --parents` (include patterns): each source is a pivot directory; an entry below it is
copied when its path relative to the pivot matches an include pattern with moby
patternmatcher semantics (`*`/`?` stay within a component, `**` spans directories, a
matching directory brings everything below it), as fsutil's copier decides with
`MatchesUsingParentResults`. Directories on the way to a match are created lazily, with
their source metadata, only once something below them is copied. `--exclude` patterns use
the same matcher, relative to the copy source. Required paths must exist.

`ADD` of a local archive (`unpack`): a regular source file that decompresses (gzip,
bzip2, xz, zstd or none, recognised by content as `archive.DetectCompression` does) to
something whose first header is a valid tar header is extracted into the dest directory
instead of being copied, as BuildKit's file backend does with `chrootarchive.Untar`:
entries keep their mode, mtime and tar owner (`--chown` replaces the owner of every
entry), missing parents are made 0755, names and hard links may not climb out of the
dest and symlinks are resolved as if the dest were `/`. As in moby's `archive.Unpack`
(AUFS whiteout format, no converter), `.wh.*` names in a user's archive are *not*
whiteouts: they are extracted as the files they are. Device nodes that cannot be made
inside the user namespace are skipped, as rootless BuildKit does, with one warning
that counts them (BuildKit run as root makes them: its file ops run outside any user
namespace, while every pybuild build, root's too, runs in one). Every path operation
of the extraction is confined to the dest tree (`layers.confined`): a symlink the
archive makes in place of a directory never redirects a later write, chmod or utime.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import os
import re
import shutil
import stat
from typing import Any, BinaryIO

from pybuild.builder.executor.protocol import CopyFiles, FileAction, MakeDir, MakeFile, Owner
from pybuild.builder.executor.users import resolve_chown, resolve_in_root
from pybuild.context.patterns import PatternMatcher
from pybuild.errors import UserError

_WILDCARD = re.compile(r"[*?\[]")


def apply_action(root: str, action: FileAction, src_root: str = "") -> list[str]:
    """Apply one action on the rootfs `root`; a copy reads its sources under `src_root`.
    Returns warnings for the build (e.g. a --chown user the image does not have)."""
    match action:
        case MakeDir():
            return _mkdir(root, action)
        case MakeFile():
            return _mkfile(root, action)
        case CopyFiles():
            return _copy(root, action, src_root)


def _owner(root: str, owner: Owner | None) -> tuple[tuple[int, int] | None, list[str]]:
    if owner is None:
        return None, []
    uid, gid, warnings = resolve_chown(root, owner.user, owner.group)
    return (uid, gid), warnings


def make_dirs(root: str, path: str, mode: int, owner: tuple[int, int] | None) -> str:
    """mkdir -p inside root; created dirs get mode and owner; returns the real path."""
    parts = [p for p in path.split("/") if p]
    cur = "/"
    for part in parts:
        cur = cur.rstrip("/") + "/" + part
        real = resolve_in_root(root, cur)
        if os.path.isdir(real):
            continue
        if os.path.lexists(real):
            raise UserError(f"cannot create directory {cur}: a file with that name exists")
        os.mkdir(real)
        os.chmod(real, mode)
        if owner is not None:
            os.lchown(real, *owner)
    return resolve_in_root(root, path)


def _mkdir(root: str, action: MakeDir) -> list[str]:
    owner, warnings = _owner(root, action.owner)
    make_dirs(root, action.path, action.mode, owner)
    return warnings


def _mkfile(root: str, action: MakeFile) -> list[str]:
    owner, warnings = _owner(root, action.owner)
    path = action.path
    parent = make_dirs(root, os.path.dirname(path) or "/", 0o755, owner)
    real = os.path.join(parent, os.path.basename(path))
    with open(real, "wb") as f:
        f.write(action.data)
    os.chmod(real, action.mode)
    if owner is not None:
        os.lchown(real, *owner)
    return warnings


# --- copy ------------------------------------------------------------------------------


def apply_chmod(mode: int, spec: str, is_dir: bool) -> int:
    """Octal or symbolic (`u+x,go=rX`) chmod, as Go's dchapes-mode applies it."""
    if not spec:
        return mode
    if re.fullmatch(r"[0-7]+", spec):
        return int(spec, 8)
    perm = mode & 0o7777
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*|[ugo])", clause)
        if not m:
            raise UserError(f"invalid chmod parameter: {spec!r}")
        who, op, what = m.groups()
        who = who or "a"
        mask = 0
        if "u" in who or "a" in who:
            mask |= 0o4700
        if "g" in who or "a" in who:
            mask |= 0o2070
        if "o" in who or "a" in who:
            mask |= 0o1007
        bits = 0
        if what in ("u", "g", "o"):
            src = {"u": (perm >> 6) & 7, "g": (perm >> 3) & 7, "o": perm & 7}[what]
            bits = src << 6 | src << 3 | src
        else:
            for ch in what:
                bits |= {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000,
                         "X": 0o111 if (is_dir or perm & 0o111) else 0}[ch]
        bits &= mask
        if op == "+":
            perm |= bits
        elif op == "-":
            perm &= ~bits
        else:
            perm = (perm & ~mask) | bits
    return perm


class _Copier:
    def __init__(self, root: str, src_root: str, action: CopyFiles) -> None:
        self.root = root
        self.src_root = src_root
        self.owner, self.warnings = _owner(root, action.owner)
        self.chmod = action.chmod
        self.links: dict[tuple[int, int], str] = {}
        self.excludes = PatternMatcher(list(action.exclude)) if action.exclude else None

    def _meta(self, src: str, dst: str, st: os.stat_result) -> None:
        if self.owner is not None:
            os.lchown(dst, *self.owner)
        else:
            os.lchown(dst, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dst, apply_chmod(stat.S_IMODE(st.st_mode), self.chmod,
                                      stat.S_ISDIR(st.st_mode)))
        _copy_xattrs(src, dst)
        os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _excluded(self, rel: str) -> bool:
        """--exclude: dockerignore-style patterns on the path relative to the copy source
        (fsutil matches them with patternmatcher, parents included)."""
        return self.excludes is not None and self.excludes.matches(rel)

    def copy_included(self, src_dir: str, dst_dir: str, rel: str, include: PatternMatcher,
                      pending: list[list[Any]]) -> None:
        """COPY --parents: copy what under `src_dir` matches an include pattern (relative to
        the pivot), as fsutil does: a matching directory is copied whole; a directory on
        the way to a match is created, with its source metadata, only once something
        below it is copied."""
        for name in sorted(os.listdir(src_dir)):
            crel = f"{rel}/{name}" if rel else name
            if self._excluded(crel):
                continue
            csrc, cdst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
            if include.matches(crel):
                self._create_pending(pending)
                self.copy_entry(csrc, cdst, crel)
            elif stat.S_ISDIR(os.lstat(csrc).st_mode):
                self.copy_included(csrc, cdst, crel, include, [*pending, [csrc, cdst, False]])

    def _create_pending(self, pending: list[list[Any]]) -> None:
        for entry in pending:
            src, dst, done = entry
            if done:
                continue
            entry[2] = True
            if os.path.isdir(dst) and not os.path.islink(dst):
                continue  # existing directories keep their owner and mode
            _remove(dst)
            os.mkdir(dst, 0o700)
            self._meta(src, dst, os.lstat(src))

    def copy_entry(self, src: str, dst: str, rel: str) -> None:
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            existed = os.path.isdir(dst) and not os.path.islink(dst)
            if not existed:
                _remove(dst)
                os.mkdir(dst, 0o700)
            for name in sorted(os.listdir(src)):
                child_rel = f"{rel}/{name}" if rel else name
                if self._excluded(child_rel):
                    continue
                self.copy_entry(os.path.join(src, name), os.path.join(dst, name), child_rel)
            if not existed:
                self._meta(src, dst, st)
            return
        _remove(dst)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            os.link(self.links[key], dst)
            return
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            with open(src, "rb") as fi, open(dst, "wb") as fo:
                shutil.copyfileobj(fi, fo, 1 << 20)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(dst)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(dst, st.st_mode, st.st_rdev)
        else:
            return  # sockets are skipped, as BuildKit does
        self._meta(src, dst, st)
        if st.st_nlink > 1:
            self.links[key] = dst


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith(("user.overlay.", "trusted.overlay.")):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)


def _matches(src_root: str, pattern: str) -> list[str]:
    """Paths (relative, '/'-separated) in src_root matching a source; [] if none."""
    pattern = pattern.strip("/")
    if not pattern or pattern == ".":
        return [""]
    if not _WILDCARD.search(pattern):
        return [pattern] if os.path.lexists(resolve_in_root(src_root, pattern)) else []
    parts = pattern.split("/")
    found = [""]
    for part in parts:
        nxt = []
        for base in found:
            real = resolve_in_root(src_root, base) if base else src_root
            if not os.path.isdir(real):
                continue
            if _WILDCARD.search(part):
                for name in sorted(os.listdir(real)):
                    if fnmatch.fnmatchcase(name, part):
                        nxt.append(f"{base}/{name}" if base else name)
            elif os.path.lexists(os.path.join(real, part)):
                nxt.append(f"{base}/{part}" if base else part)
        found = nxt
    return found


def _copy(root: str, action: CopyFiles, src_root: str) -> list[str]:
    dest = action.dest
    copier = _Copier(root, src_root, action)
    # Created parents get the --chmod mode (fsutil's MkdirAll), but only its permission
    # bits: Go's os.FileMode(0o4755) has no set-id bits for os.Mkdir/Chmod (0755).
    parent_mode = apply_chmod(0o755, copier.chmod, True) & 0o777 if copier.chmod else 0o755
    if action.include_patterns or action.required_paths:
        _copy_parents(root, action, src_root, copier, parent_mode)
        return copier.warnings
    for pattern in action.sources:
        matches = _matches(src_root, pattern)
        if not matches:
            if _WILDCARD.search(pattern):
                continue  # BuildKit allows a wildcard to match nothing
            raise UserError(f"{pattern}: not found", code="copy-source-missing")
        for rel in matches:
            src = resolve_in_root(src_root, rel) if rel else src_root
            if not os.path.lexists(src):
                raise UserError(f"{rel}: not found", code="copy-source-missing")
            if os.path.isdir(src):
                target = make_dirs(root, dest, parent_mode, copier.owner)
                copier.copy_entry(src, target, "")
                continue
            if action.unpack and is_archive(src):
                target = make_dirs(root, dest, 0o755, copier.owner)
                copier.warnings.extend(untar(src, target, copier.owner))
                continue
            real_dest = resolve_in_root(root, dest)
            if action.dest_is_dir or os.path.isdir(real_dest) or len(matches) > 1:
                parent = make_dirs(root, dest, parent_mode, copier.owner)
                copier.copy_entry(src, os.path.join(parent, os.path.basename(rel)), rel)
            else:
                parent = make_dirs(root, os.path.dirname(dest) or "/", parent_mode, copier.owner)
                copier.copy_entry(src, os.path.join(parent, os.path.basename(dest)), rel)
    return copier.warnings


def include_matcher(patterns: Any) -> PatternMatcher:
    """The include patterns of a --parents copy; an empty one (`a/./`) means everything."""
    return PatternMatcher(["**" if p.strip("/") in ("", ".") else p for p in patterns]
                          or ["**"])


def _copy_parents(root: str, action: CopyFiles, src_root: str, copier: _Copier,
                  parent_mode: int) -> None:
    """COPY --parents: each source is a pivot directory; what below it matches the include
    patterns lands in dest keeping its path relative to the pivot. Required paths (a
    --parents source without wildcards) must exist."""
    for path in action.required_paths:
        if not os.path.lexists(resolve_in_root(src_root, path)):
            raise UserError(f'"{path}": not found', code="copy-source-missing")
    include = include_matcher(action.include_patterns)
    pivots: list[str] = []
    for pattern in action.sources:
        matches = _matches(src_root, pattern)
        if not matches and not _WILDCARD.search(pattern):
            raise UserError(f'"{pattern}": not found', code="copy-source-missing")
        pivots.extend(matches)
    if not pivots:
        return  # a wildcard pivot that matches nothing copies nothing (and makes no dest)
    target = make_dirs(root, action.dest, parent_mode, copier.owner)
    for rel in pivots:
        pivot = resolve_in_root(src_root, rel) if rel else src_root
        if os.path.isdir(pivot):
            copier.copy_included(pivot, target, "", include, [])


# --- ADD: local archives ---------------------------------------------------------------

def _open_archive(path: str, stack: contextlib.ExitStack) -> BinaryIO:
    """The decompressed stream of `path` (compression recognised by its magic bytes),
    bounded as layers are (a decompression bomb is refused, not unpacked)."""
    from pybuild.layers.decompress import decompressed

    f = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by the stack
    return stack.enter_context(decompressed(f, archive_formats=True,
                                            what=f"archive {os.path.basename(path)}"))


def is_archive(path: str) -> bool:
    """BuildKit's isArchivePath: a regular file whose decompressed content starts with a
    valid tar header (an empty archive is not one)."""
    from pybuild.layers import tarformat as tf

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with contextlib.ExitStack() as stack:
            stream = _open_archive(path, stack)
            block = b""
            while len(block) < tf.BLOCK:
                chunk = stream.read(tf.BLOCK - len(block))
                if not chunk:
                    return False
                block += chunk
    except Exception:  # anything unreadable is "not an archive"
        return False
    if block == tf.ZERO_BLOCK:
        return False
    try:
        stored = tf.parse_number(block[148:156])
    except ValueError:
        return False
    return tf.checksum_ok(block, stored)


def _entry_parts(name: bytes) -> list[bytes]:
    """A tar entry name, cleaned; climbing out of the dest is an error (moby's
    breakoutError)."""
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                raise UserError(f"invalid archive entry {os.fsdecode(name)!r}: it escapes the "
                                "destination", code="archive-breakout")
            parts.pop()
            continue
        parts.append(part)
    return parts


def untar(archive: str, dest: str, owner: tuple[int, int] | None) -> list[str]:
    """Extract `archive` into the directory `dest` (see the module docstring); the
    warnings for the build (device nodes that could not be made)."""
    from pybuild.layers.confined import DirStack, open_root
    from pybuild.layers.errors import LayerError
    from pybuild.layers.tarreader import TarReader

    root_fd = open_root(dest)
    root_path = os.fsencode(os.path.realpath(dest))
    extract = _Untar(root_fd, DirStack(root_fd, root_path), DirStack(root_fd, root_path),
                     owner)
    entry = b""
    try:
        with contextlib.ExitStack() as stack:
            reader = TarReader(_open_archive(archive, stack))
            for e in reader:
                entry = e.name
                extract.entry(e, reader)
            entry = b""
            extract.finish_dirs(DirStack(root_fd, root_path))
    except LayerError as exc:
        where = f" at {os.fsdecode(entry)!r}" if entry else ""
        raise UserError(f"cannot extract {os.path.basename(archive)}{where}: "
                        f"{exc.message}".replace("layer tar", "archive")
                        .replace("layer entry", "entry"), code="archive-corrupt") from None
    except OSError as exc:  # the file system refused: full disk, a name too long...
        where = f" {os.fsdecode(entry)!r}" if entry else ""
        raise UserError(f"cannot extract{where} from {os.path.basename(archive)}: "
                        f"{exc.strerror or exc}", code="archive-write") from None
    finally:
        extract.close()
    if extract.dropped_devices:
        n = extract.dropped_devices
        return [f"{os.path.basename(archive)}: {n} device node{'s' if n > 1 else ''} left "
                "out: devices cannot be created inside the build's user namespace"]
    return []


class _Untar:
    """One ADD extraction. Every operation names its target as (directory fd, name), the
    directory resolved inside dest at that moment by `confined.DirStack` (symlinks
    followed as if dest were `/`, never by the kernel), so an entry that turns a parent
    into a symlink cannot redirect a later write, chmod, chown or utime out of dest."""

    def __init__(self, root_fd: int, main: Any, side: Any,
                 owner: tuple[int, int] | None) -> None:
        self.root_fd = root_fd
        self.main = main  # the current entry's parent
        self.side = side  # hard link targets
        self.owner = owner
        self.dirs: dict[bytes, tuple[int, int, int]] = {}  # resolved key -> mode, mtime, ino
        self.dropped_devices = 0

    def close(self) -> None:
        self.main.close()
        self.side.close()
        os.close(self.root_fd)

    def _parent(self, parts: list[bytes]) -> int:
        from pybuild.layers.errors import LayerError

        try:
            fd: int | None = self.main.resolve(parts, create=True)
        except LayerError:
            fd = None
        if fd is None:
            raise UserError(f"cannot extract below {'/'.join(map(os.fsdecode, parts))}: "
                            "not a directory", code="archive-conflict")
        return fd

    def _remove(self, parent: int, name: bytes, st: os.stat_result) -> None:
        from pybuild.layers.confined import remove_tree

        if stat.S_ISDIR(st.st_mode):
            remove_tree(parent, name)
            self.side.reset()  # it may have held the removed directory
        else:
            os.unlink(name, dir_fd=parent)

    def entry(self, e: Any, reader: Any) -> None:
        from pybuild.layers import tarformat as tf

        if b"\0" in e.name or b"\0" in e.linkname:
            raise UserError(f"invalid archive entry {os.fsdecode(e.name)!r}: a NUL byte",
                            code="archive-corrupt")
        parts = _entry_parts(e.name)
        if not parts:
            return  # the archive's root: dest keeps its own metadata
        parent = self._parent(parts[:-1])
        base = parts[-1]
        kind = e.type
        st = _lstat_at(parent, base)
        if st is not None and not (kind == tf.DIR and stat.S_ISDIR(st.st_mode)):
            if kind == tf.LINK and self._is_link_to_itself(parent, base, e):
                return
            self._remove(parent, base, st)
        if kind == tf.DIR:
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(base, 0o700, dir_fd=parent)
            self._owner_at(parent, base, e)
            self._xattrs_at(parent, base, e)
            key = self._key(base)
            ino = os.stat(base, dir_fd=parent, follow_symlinks=False).st_ino
            self.dirs[key] = (e.mode & 0o7777, e.mtime, ino)
            return
        if kind == tf.REG:
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=parent)
            try:
                reader.copy_data(functools.partial(_write_all, fd))
                uid, gid = self.owner if self.owner is not None else (e.uid, e.gid)
                try:
                    os.fchown(fd, uid, gid)
                except OSError as exc:
                    self._owner_failed(exc, e, uid, gid)
                self._xattrs_at(parent, base, e)
                os.fchmod(fd, e.mode & 0o7777)
                os.utime(fd, ns=_mtime_ns(e.mtime))
            finally:
                os.close(fd)
            return
        if kind == tf.SYMLINK:
            os.symlink(e.linkname, base, dir_fd=parent)
            self._owner_at(parent, base, e)
            os.utime(base, ns=_mtime_ns(e.mtime), dir_fd=parent, follow_symlinks=False)
            return
        if kind == tf.LINK:
            src_parent, src_name = self._link_target(e)
            os.link(src_name, base, src_dir_fd=src_parent, dst_dir_fd=parent,
                    follow_symlinks=False)
            return
        if kind == tf.FIFO:
            os.mkfifo(base, 0o600, dir_fd=parent)
        elif kind in (tf.CHR, tf.BLK):
            dev = stat.S_IFCHR if kind == tf.CHR else stat.S_IFBLK
            try:
                os.mknod(base, dev | 0o600, os.makedev(e.devmajor, e.devminor),
                         dir_fd=parent)
            except (PermissionError, OverflowError, ValueError):
                self.dropped_devices += 1  # not allowed in a user namespace
                return
        else:
            return  # unknown entry types are skipped, as moby does
        self._owner_at(parent, base, e)
        self._xattrs_at(parent, base, e)
        # A fifo or device this extraction just made: chmod through the confined parent.
        os.chmod(self.main.path_of(base), e.mode & 0o7777)
        os.utime(base, ns=_mtime_ns(e.mtime), dir_fd=parent, follow_symlinks=False)

    def _key(self, base: bytes) -> bytes:
        return b"/".join((*self.main.names, base))

    def _link_target(self, e: Any) -> tuple[int, bytes]:
        tparts = _entry_parts(e.linkname)
        tparent = self.side.resolve(tparts[:-1], create=False) if tparts else None
        st = _lstat_at(tparent, tparts[-1]) if tparent is not None else None
        if tparent is None or st is None or stat.S_ISDIR(st.st_mode):
            raise UserError(f"invalid hard link {os.fsdecode(e.name)!r} -> "
                            f"{os.fsdecode(e.linkname)!r} in the archive",
                            code="archive-breakout")
        return tparent, tparts[-1]

    def _is_link_to_itself(self, parent: int, base: bytes, e: Any) -> bool:
        tparts = _entry_parts(e.linkname)
        if not tparts:
            return False
        tparent = self.side.resolve(tparts[:-1], create=False)
        return tparent is not None and self.side.names == self.main.names and \
            tparts[-1] == base

    def _owner_at(self, parent: int, base: bytes, e: Any) -> None:
        uid, gid = self.owner if self.owner is not None else (e.uid, e.gid)
        try:
            os.chown(base, uid, gid, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            self._owner_failed(exc, e, uid, gid)

    @staticmethod
    def _owner_failed(exc: OSError, e: Any, uid: int, gid: int) -> None:
        if exc.errno not in (errno.EINVAL, errno.EPERM):
            raise exc
        raise UserError(f"cannot give {os.fsdecode(e.name)} the owner {uid}:{gid}: not "
                        "mapped in this build's user namespace", code="archive-owner") from None

    def _xattrs_at(self, parent: int, base: bytes, e: Any) -> None:
        for name, value in e.xattrs.items():
            if name.startswith(("user.overlay.", "trusted.overlay.")):
                continue
            with contextlib.suppress(OSError):  # best effort, as BestEffortXattrs
                os.setxattr(self.main.path_of(base), name, value, follow_symlinks=False)

    def finish_dirs(self, walk: Any) -> None:
        """Directory modes and mtimes, set last (children change a parent's mtime; a
        0555 directory must still take them). Each is found again from dest's root
        without following anything, and only if it is still the directory made:
        otherwise (the archive replaced it, or a parent, by a symlink) it is skipped."""
        from pybuild.layers.confined import read_dir_fd

        try:
            for key in sorted(self.dirs, reverse=True):  # descendants first
                mode, mtime, ino = self.dirs[key]
                parts = key.split(b"/")
                parent = walk.walk_strict(parts[:-1])
                if parent is None:
                    continue
                try:
                    fd = read_dir_fd(parent, parts[-1])
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue
                    raise
                try:
                    if os.fstat(fd).st_ino == ino:
                        os.fchmod(fd, mode)
                        os.utime(fd, ns=_mtime_ns(mtime))
                finally:
                    os.close(fd)
        finally:
            walk.close()


def _lstat_at(parent: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


_NS_LIMIT = (1 << 63) - 1


def _mtime_ns(mtime: int) -> tuple[int, int]:
    ns = max(-_NS_LIMIT, min(mtime * 1_000_000_000, _NS_LIMIT))
    return ns, ns


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]

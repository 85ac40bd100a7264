"""The build context: which files a COPY reads, their content digest, and the tar sent over.

A COPY's cache key includes a digest of exactly the files it reads (after .dockerignore
and --exclude), covering path, type, mode, size, content and symlink targets but not
mtimes or owners (context files become 0:0 in the image), so a fresh clone hits the cache.
A stat cache avoids re-reading files whose (size, mtime, ctime, inode) did not change.
"""

from __future__ import annotations

import fnmatch
import hashlib
import marshal
import os
import re
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, NamedTuple

from pybuild.builder.executor.fileops import include_matcher
from pybuild.errors import UserError
from pybuild.frontend.dockerignore import PatternMatcher

_WILDCARD = re.compile(r"[*?\[]")


class ContextEntry(NamedTuple):
    """One selected context file. A NamedTuple, not a dataclass: a big context makes
    tens of thousands of them, and a tuple is three times cheaper to create."""

    rel: str  # '/'-separated, relative to the context root
    path: str  # absolute path on the host
    st: os.stat_result


def owned_by_root(st: os.stat_result) -> Any:
    """A context file's stat as the image sees it: everything but the owner, which is 0:0
    (BuildKit's COPY without --chown)."""
    return SimpleNamespace(
        st_mode=st.st_mode, st_ino=st.st_ino, st_dev=st.st_dev, st_nlink=st.st_nlink,
        st_uid=0, st_gid=0, st_size=st.st_size, st_mtime_ns=st.st_mtime_ns,
        st_rdev=st.st_rdev)


def below(rel: str, prefix: str) -> str | None:
    """`rel` relative to the directory `prefix` ("" is the root); None if not below it."""
    if not prefix:
        return rel
    return rel[len(prefix) + 1:] if rel.startswith(prefix + "/") else None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


class StatCache:
    """(path, size, mtime_ns, ctime_ns, ino) -> sha256 hex, persisted per root.

    Stored with marshal: a warm rebuild of a 20,000-file context loads it in a few ms
    (JSON took 35). A file that does not load is an empty cache, never an error."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, list[object]] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if path is not None:
            try:
                data = marshal.loads(path.read_bytes())
            except (OSError, ValueError, EOFError, TypeError):
                data = None
            if isinstance(data, dict):
                self._data = data

    def digest(self, path: str, st: os.stat_result) -> str:
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self._data.get(path)  # dict reads are atomic; only writers take the lock
        if hit is not None and hit[:4] == sig:
            return str(hit[4])
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        hexd = h.hexdigest()
        with self._lock:
            self._data[path] = [*sig, hexd]
            self._dirty = True
        return hexd

    def known(self, path: str, st: os.stat_result) -> bool:
        """Whether the digest of this file (as stat'ed) is cached."""
        hit = self._data.get(path)
        return hit is not None and hit[:4] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                               st.st_ino]

    def record(self, path: str, st: os.stat_result, hexdigest: str) -> None:
        """Remember a digest computed by a reader that had the content anyway."""
        with self._lock:
            self._data[path] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                hexdigest]
            self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        # A private temp name: two builds saving at once must not interleave their bytes.
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with self._lock:
            tmp.write_bytes(marshal.dumps(self._data))
        os.replace(tmp, self.path)
        self._dirty = False


class BuildContext:
    def __init__(self, root: str, ignore: PatternMatcher | None, stat_cache: StatCache,
                 ignore_file: str = ".dockerignore") -> None:
        self.root = os.path.abspath(root)
        self.ignore = ignore
        self.stat_cache = stat_cache
        self.ignore_file = ignore_file

    def _ignored(self, rel: str) -> bool:
        return self.ignore is not None and bool(rel) and self.ignore.matches(rel)

    def _resolve(self, rel: str) -> str:
        """Follow symlinks of a top-level source, never leaving the context."""
        parts = [p for p in rel.split("/") if p and p != "."]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            cand = os.path.join(self.root, *resolved, part)
            if os.path.islink(cand):
                hops += 1
                if hops > 40:
                    raise UserError(f"too many symbolic links resolving {rel}")
                target = os.readlink(cand)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            resolved.append(part)
        return "/".join(resolved)

    def _matches(self, pattern: str) -> list[str]:
        pattern = pattern.strip("/")
        if pattern in ("", "."):
            return [""]
        if not _WILDCARD.search(pattern):
            rel = os.path.normpath(pattern).lstrip("/")
            if rel.startswith(".."):
                rel = self._resolve(rel)
            return [rel] if os.path.lexists(os.path.join(self.root, rel)) else []
        found = [""]
        for part in pattern.split("/"):
            nxt: list[str] = []
            for base in found:
                real = os.path.join(self.root, self._resolve(base)) if base else self.root
                if not os.path.isdir(real):
                    continue
                if _WILDCARD.search(part):
                    names = sorted(os.listdir(real))
                    nxt.extend(f"{base}/{n}" if base else n for n in names
                               if fnmatch.fnmatchcase(n, part))
                elif os.path.lexists(os.path.join(real, part)):
                    nxt.append(f"{base}/{part}" if base else part)
            found = nxt
        return [m for m in found if not self._ignored(m)]

    def select(self, sources: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[
            ContextEntry]:
        """Every context entry a COPY of `sources` reads, sorted by path."""
        excl = PatternMatcher(list(exclude)) if exclude else None
        out: dict[str, ContextEntry] = {}
        for src in sources:
            matches = self._matches(src)
            if not matches and not _WILDCARD.search(src):
                rel = os.path.normpath(src.strip("/")) if src.strip("/") else ""
                exists = os.path.lexists(os.path.join(self.root, rel))
                if exists and self._ignored(rel):
                    raise UserError(
                        f"{src}: excluded by {self.ignore_file} (pattern "
                        f"{self.ignore.excluded_by(rel) if self.ignore else '?'!r}), so it "
                        "is not in the build context",
                        code="copy-source-excluded",
                        hint=f"remove the pattern from {self.ignore_file} or add "
                             f"'!{rel}' after it")
                raise UserError(f"{src}: not found in the build context ({self.root})",
                                code="copy-source-missing")
            for rel in matches:
                if rel and self._ignored(rel):
                    raise UserError(f"{src}: excluded by {self.ignore_file}",
                                    code="copy-source-excluded")
                real_rel = self._resolve(rel) if rel else ""
                self._add_tree(real_rel, rel, out, excl)
        return [out[k] for k in sorted(out)]

    def select_parents(self, pivots: tuple[str, ...], include: tuple[str, ...],
                       required: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[
            ContextEntry]:
        """What `COPY --parents` reads: below each pivot (a path or a wildcard), the entries
        matching an include pattern (dockerignore-style, relative to the pivot, as fsutil's
        copier matches them) plus the directories leading to them. Only the include
        patterns' literal prefixes are walked."""
        for path in required:
            rel = os.path.normpath(path.strip("/")) if path.strip("/") else ""
            real = os.path.join(self.root, self._resolve(rel)) if rel else self.root
            if not os.path.lexists(real) or (rel and self._ignored(rel)):
                raise UserError(f'"{path}": not found in the build context ({self.root})',
                                code="copy-source-missing")
        incl = include_matcher(include)
        excl = PatternMatcher(list(exclude)) if exclude else None
        out: dict[str, ContextEntry] = {}
        for pivot in pivots:
            matches = self._matches(pivot)
            if not matches and not _WILDCARD.search(pivot):
                raise UserError(f"{pivot}: not found in the build context ({self.root})",
                                code="copy-source-missing")
            for prel in matches:
                preal = self._resolve(prel) if prel else ""
                pivot_path = os.path.join(self.root, preal) if preal else self.root
                if not os.path.isdir(pivot_path):
                    continue
                if prel:
                    out[prel] = ContextEntry(rel=prel, path=pivot_path, st=os.stat(pivot_path))
                found: dict[str, ContextEntry] = {}
                for pattern in incl.patterns:
                    self._add_included(pattern, prel, preal, found, excl)
                keep: set[str] = set()
                for rel in found:
                    sub = rel[len(prel):].lstrip("/") if prel else rel
                    if incl.matches(sub):
                        keep.add(rel)
                        parent = rel.rpartition("/")[0]
                        while parent and parent != prel and parent not in keep:
                            keep.add(parent)
                            parent = parent.rpartition("/")[0]
                out.update((k, found[k]) for k in keep)
        return [out[k] for k in sorted(out)]

    def _add_included(self, pattern: str, prel: str, preal: str,
                      found: dict[str, ContextEntry], excl: PatternMatcher | None) -> None:
        """Walk the tree of the literal prefix of one include pattern (below a pivot)."""
        prefix: list[str] = []
        for part in pattern.split("/"):
            if _WILDCARD.search(part) or part in ("", "."):
                break
            prefix.append(part)
        rel, real = prel, preal
        for i, part in enumerate(prefix):
            rel = f"{rel}/{part}" if rel else part
            real = f"{real}/{part}" if real else part
            path = os.path.join(self.root, real)
            try:
                st = os.lstat(path)
            except OSError:
                return
            if self._ignored(rel) or (excl is not None and excl.matches(
                    rel[len(prel):].lstrip("/"))):
                return
            if i < len(prefix) - 1 and not stat.S_ISDIR(st.st_mode):
                return
            found[rel] = ContextEntry(rel=rel, path=path, st=st)
        if rel != prel and not stat.S_ISDIR(found[rel].st.st_mode):
            return
        self._add_tree(real, rel, found, excl, base=prel, follow=False)

    def _add_tree(self, real_rel: str, rel: str, out: dict[str, ContextEntry],
                  excl: PatternMatcher | None, *, base: str | None = None,
                  follow: bool = True) -> None:
        path = os.path.join(self.root, real_rel) if real_rel else self.root
        st = os.stat(path) if follow else os.lstat(path)  # top-level symlinks are followed
        if rel:
            out[rel] = ContextEntry(rel=rel, path=path, st=st)
        if not stat.S_ISDIR(st.st_mode):
            return
        base = rel if base is None else base
        stack = [(path, rel)]
        if self.ignore is None and excl is None:
            self._add_all(stack, out)
            return
        while stack:
            dpath, drel = stack.pop()
            for name in _listdir(dpath):
                crel = f"{drel}/{name}" if drel else name
                # The ignore file applies to context paths as they are in the context.
                if self._ignored(crel) and not (self.ignore and self.ignore.exclusions):
                    continue
                cpath = os.path.join(dpath, name)
                cst = os.lstat(cpath)
                is_dir = stat.S_ISDIR(cst.st_mode)
                if self._ignored(crel):
                    if is_dir:
                        stack.append((cpath, crel))  # an exception may re-include a child
                    continue
                if excl is not None and excl.matches(crel[len(base):].lstrip("/") or crel):
                    continue
                out[crel] = ContextEntry(rel=crel, path=cpath, st=cst)
                if is_dir:
                    stack.append((cpath, crel))

    @staticmethod
    def _add_all(stack: list[tuple[str, str]], out: dict[str, ContextEntry]) -> None:
        """_add_tree's walk when nothing is ignored or excluded: the big-context loop."""
        lstat, is_dir = os.lstat, stat.S_ISDIR
        while stack:
            dpath, drel = stack.pop()
            for name in _listdir(dpath):
                crel = f"{drel}/{name}" if drel else name
                cpath = f"{dpath}/{name}"
                cst = lstat(cpath)
                out[crel] = ContextEntry(crel, cpath, cst)
                if is_dir(cst.st_mode):
                    stack.append((cpath, crel))

    def digest(self, entries: list[ContextEntry]) -> str:
        """Content digest of the selected entries (no mtimes, no owners)."""
        lines: list[str] = []
        file_digest = self.stat_cache.digest
        for e in entries:
            mode = e.st.st_mode
            line = f"{e.rel}\0{stat.S_IFMT(mode):o}\0{stat.S_IMODE(mode):o}\0"
            if stat.S_ISREG(mode):
                line += f"{e.st.st_size}\0{file_digest(e.path, e.st)}"
            elif stat.S_ISLNK(mode):
                line += os.readlink(e.path)
            lines.append(line)
        lines.append("")  # every line ends with a newline
        data = "\n".join(lines).encode("utf-8", "surrogateescape")
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def write_tar(self, entries: list[ContextEntry], out: BinaryIO,
                  strip_prefix: str = "") -> None:
        """The selected entries as a tar rooted at the context root (or, with
        `strip_prefix`, at that directory: its own entry is left out), owned by 0:0."""
        from pybuild.layers.tarwriter import LayerWriter

        writer = LayerWriter(out)
        for e in entries:
            rel = below(e.rel, strip_prefix)
            if rel is not None:
                writer.add_path(rel, e.path, owned_by_root(e.st))
        writer.close()

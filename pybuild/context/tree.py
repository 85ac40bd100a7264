"""The build context: which files a COPY reads, their content digest, and the tar sent over.

A COPY's cache key includes a digest of exactly the files it reads (after .dockerignore
and --exclude), covering path, type, mode, size, content and symlink targets but not
mtimes or owners (context files become 0:0 in the image), so a fresh clone hits the cache.
A stat cache (`statcache`) avoids re-reading files whose (size, mtime, ctime, inode) did
not change. Sources are resolved inside the context (`resolve`): a symlink to /etc/shadow
names <context>/etc/shadow, and a source that does not exist there is a "not found"
error naming it, as in BuildKit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from types import SimpleNamespace
from typing import Any, BinaryIO, NamedTuple

from pybuild.context.patterns import (
    PatternMatcher,
    has_wildcards,
    include_matcher,
    is_literal_path,
)
from pybuild.context.resolve import resolve_relative
from pybuild.context.statcache import StatCache
from pybuild.errors import NotFoundError, UserError


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
        raise UserError(f"cannot read {path}: {exc.strerror}",
                        code="context-unreadable") from None


def _lstat(path: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}",
                        code="context-unreadable") from None


class BuildContext:
    def __init__(self, root: str, ignore: PatternMatcher | None, stat_cache: StatCache,
                 ignore_file: str = ".dockerignore") -> None:
        self.root = os.path.abspath(root)
        self.ignore = ignore
        # The table of this root; a cache given for another root shares its storage.
        self.stat_cache = stat_cache.for_root(self.root)
        self.ignore_file = ignore_file

    def _ignored(self, rel: str) -> bool:
        return self.ignore is not None and bool(rel) and self.ignore.matches(rel)

    def _resolve(self, rel: str) -> str:
        """Follow symlinks of a source, never leaving the context."""
        return resolve_relative(self.root, rel)

    def _exists(self, rel: str) -> bool:
        """Whether `rel` names an entry of the context (itself a link or not): its parent
        directories are resolved inside the context, never through the host."""
        parent, _, name = rel.rpartition("/")
        if not name:
            return True
        base = os.path.join(self.root, self._resolve(parent)) if parent else self.root
        return os.path.lexists(os.path.join(base, name))

    def _missing(self, src: str, rel: str) -> NotFoundError:
        """BuildKit's "not found" for a source, saying where a symlink on its way led."""
        why = ""
        parts = [p for p in rel.split("/") if p and p != "."]
        for i in range(len(parts)):
            prefix = "/".join(parts[:i + 1])
            if not self._exists(prefix):
                break
            parent = self._resolve("/".join(parts[:i]))
            link = os.path.join(self.root, parent, parts[i])
            if os.path.islink(link):
                why = (f": {prefix} is a symbolic link to {os.readlink(link)}, and links "
                       f"resolve inside the context (to /{self._resolve(prefix)}, which does "
                       "not exist)")
                break
        return NotFoundError(f"{src}: not found in the build context ({self.root}){why}",
                             code="copy-source-missing")

    def _source_stat(self, src: str, rel: str, real_rel: str) -> os.stat_result:
        """The stat of a top-level source (symlinks followed, inside the context)."""
        path = os.path.join(self.root, real_rel) if real_rel else self.root
        try:
            return os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(src, rel) from None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}",
                            code="context-unreadable") from None

    def _matches(self, pattern: str) -> list[str]:
        pattern = pattern.strip("/")
        if pattern in ("", "."):
            return [""]
        if not has_wildcards(pattern):
            rel = os.path.normpath(pattern).lstrip("/")
            if rel.startswith(".."):
                rel = self._resolve(rel)
            return [rel] if self._exists(rel) else []
        found = [""]
        for part in pattern.split("/"):
            nxt: list[str] = []
            for base in found:
                real = os.path.join(self.root, self._resolve(base)) if base else self.root
                if not os.path.isdir(real):
                    continue
                if has_wildcards(part):
                    names = sorted(_listdir(real))
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
            if not matches and not has_wildcards(src):
                rel = os.path.normpath(src.strip("/")) if src.strip("/") else ""
                if self._exists(rel) and self._ignored(rel):
                    raise UserError(
                        f"{src}: excluded by {self.ignore_file} (pattern "
                        f"{self.ignore.excluded_by(rel) if self.ignore else '?'!r}), so it "
                        "is not in the build context",
                        code="copy-source-excluded",
                        hint=f"remove the pattern from {self.ignore_file} or add "
                             f"'!{rel}' after it")
                raise self._missing(src, rel)
            for rel in matches:
                if rel and self._ignored(rel):
                    raise UserError(f"{src}: excluded by {self.ignore_file}",
                                    code="copy-source-excluded")
                real_rel = self._resolve(rel) if rel else ""
                self._add_tree(real_rel, rel, out, excl,
                               st=self._source_stat(src, rel, real_rel))
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
            if not matches and not has_wildcards(pivot):
                raise self._missing(pivot, os.path.normpath(pivot.strip("/") or "."))
            for prel in matches:
                preal = self._resolve(prel) if prel else ""
                pivot_path = os.path.join(self.root, preal) if preal else self.root
                if not os.path.isdir(pivot_path):
                    continue
                if prel:
                    out[prel] = ContextEntry(rel=prel, path=pivot_path,
                                             st=self._source_stat(pivot, prel, preal))
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
            if not is_literal_path(part) or part in ("", "."):
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
        self._add_tree(real, rel, found, excl, base=prel)

    def _add_tree(self, real_rel: str, rel: str, out: dict[str, ContextEntry],
                  excl: PatternMatcher | None, *, base: str | None = None,
                  st: os.stat_result | None = None) -> None:
        """`rel` (found at `real_rel`) and everything below it; `st`: its stat with
        symlinks followed (a top-level source), else it is lstat'ed."""
        path = os.path.join(self.root, real_rel) if real_rel else self.root
        if st is None:
            st = _lstat(path)
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
                cst = _lstat(cpath)
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
                try:
                    cst = lstat(cpath)
                except OSError:
                    cst = _lstat(cpath)  # raises the user error
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

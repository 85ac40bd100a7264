"""The one symlink-safe path resolver: a path inside a root, never outside it.

Used for build-context sources (the host side of COPY) and for paths inside an image's
root filesystem in the sandbox (USER lookups in /etc/passwd, COPY destinations, mkdir
-p). The root plays `/`, as chroot(2) or BuildKit's `fs.RootPath` see it: an absolute
symlink restarts at the root, `..` stops at the root, and each component is looked up
only after the ones before it are resolved to real directories, so `..` after them is
their real parent and a link that climbs out (`up -> ../../..`, `etc -> /etc`) lands
inside. More than 40 links (Linux's MAXSYMLINKS) is an error, which ends loops.

It resolves; it does not open. Between this and the caller's open, a process that can
write the tree could swap a directory for a link: callers that face one (layer apply)
must open with O_NOFOLLOW below a directory fd.

Standard library only (and `pybuild.errors`): the sandbox daemon imports it.
"""

from __future__ import annotations

import os
import stat
from collections import deque

from pybuild.errors import UserError

MAX_SYMLINKS = 40


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def resolve_relative(root: str, path: str) -> str:
    """`path` (absolute or relative to `root`) resolved inside `root`, as a relative path
    ('/'-separated, "" for the root itself). Every symlink is followed, the last one too;
    components that do not exist are kept as written."""
    if "\0" in path:
        raise UserError(f"invalid path {path!r}: it contains a NUL byte")
    todo = deque(_components(path))
    resolved: list[str] = []
    hops = 0
    while todo:
        part = todo.popleft()
        if part == "..":
            if resolved:
                resolved.pop()  # a real directory: its lexical parent is its real one
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            resolved.append(part)  # missing (or unreadable): taken as written
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise UserError(f"too many levels of symbolic links in {path}",
                            code="symlink-loop")
        try:
            target = os.readlink(candidate)
        except OSError:  # gone since the lstat: taken as written, like a missing one
            resolved.append(part)
            continue
        if target.startswith("/"):
            resolved = []
        todo.extendleft(reversed(_components(target)))
    return "/".join(resolved)


def resolve_in_root(root: str, path: str) -> str:
    """`path` inside `root`, following symlinks without ever leaving `root`: the host
    path (`root` itself for `/`)."""
    rel = resolve_relative(root, path)
    return os.path.join(root, rel) if rel else root

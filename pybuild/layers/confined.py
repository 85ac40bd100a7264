"""Path resolution that never leaves one directory tree: directory fds, one component at a time.

A layer decides what its tree contains, including symlinks in place of directories. Every
operation of an unpack therefore names its target as (directory fd, one name) and never
as a path the kernel would resolve on its own: a directory is entered with
`O_PATH | O_DIRECTORY | O_NOFOLLOW`, so a symlink is never followed by the kernel. A
symlink met while resolving an entry's *parent* is read and resolved here, inside the
tree, as if the tree were "/" (absolute targets restart at the tree's root, ".." stops
there): the semantics of `openat2(RESOLVE_IN_ROOT)` and of every container unpacker.

openat2 itself is not used: the applier needs the *resolved* names of the parent (to know
which entries this layer wrote, and to find deferred directories again), which openat2
does not return, and with the prefix cache below a resolution costs one `openat` per new
directory component, the syscall count openat2 would need anyway.

`DirStack` keeps the fds of the current resolved prefix, as tar implementations do:
consecutive entries in one directory cost no syscall to resolve, and a step into a
subdirectory costs one.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable

from pybuild.layers.errors import LayerError

__all__ = [
    "DIR_FLAGS",
    "MAX_SYMLINK_HOPS",
    "DirStack",
    "open_root",
    "path_at",
    "read_dir_fd",
    "remove_tree",
]

DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINK_HOPS = 255
_NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)

# Called for a parent component that exists but is neither a directory nor a symlink;
# returns True when it replaced it by a directory (an overlay whiteout becomes an opaque
# dir), False to refuse.
Blocked = Callable[[int, bytes, os.stat_result], bool]

_proc_fd: bool | None = None


def _have_proc_fd() -> bool:
    global _proc_fd
    if _proc_fd is None:
        _proc_fd = os.path.isdir("/proc/self/fd")
    return _proc_fd


def open_root(path: str) -> int:
    """The tree's root as an O_PATH fd (the caller chose the path: it may be a symlink)."""
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (NotADirectoryError, FileNotFoundError):
        raise LayerError(f"{path}: not a directory") from None


def read_dir_fd(parent: int, name: bytes) -> int:
    """`name` (a directory, never a symlink) opened for reading, fchmod and fsetxattr."""
    return os.open(name, _READ_DIR, dir_fd=parent)


def remove_tree(parent: int, name: bytes) -> None:
    """Delete the directory `name` in `parent` and all below, never following a symlink.
    Directories the user may not read or write (an earlier layer's 0555, as a non-root
    user) are opened up first: this is a tree being unpacked, not someone else's."""
    try:
        shutil.rmtree(os.fsdecode(name), dir_fd=parent)
    except PermissionError:
        _remove_forced(parent, name)


def _remove_forced(parent: int, name: bytes) -> None:
    os.chmod(name, 0o700, dir_fd=parent, follow_symlinks=False)
    fd = os.open(name, _READ_DIR, dir_fd=parent)
    try:
        for text in os.listdir(fd):
            child = os.fsencode(text)
            if stat.S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                _remove_forced(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


class DirStack:
    """The fds of one resolved directory path inside the tree, root first.

    `names` are the real (symlink-free) components of the path whose fd is `top`; they
    stay valid as long as nothing on the path is removed, which the applier guarantees
    for its main stack (it only ever removes children of the top) and enforces for side
    stacks with `reset()`.
    """

    __slots__ = ("_fds", "_key", "names", "root_path")

    def __init__(self, root_fd: int, root_path: bytes) -> None:
        self.root_path = root_path
        self._fds = [root_fd]  # not owned: the root fd is closed by whoever opened it
        self.names: list[bytes] = []
        self._key: bytes | None = b""

    @property
    def top(self) -> int:
        return self._fds[-1]

    @property
    def key(self) -> bytes:
        """The resolved path relative to the root (b"" for the root)."""
        if self._key is None:
            self._key = b"/".join(self.names)
        return self._key

    def reset(self, depth: int = 0) -> None:
        fds = self._fds
        if len(fds) > depth + 1:
            while len(fds) > depth + 1:
                os.close(fds.pop())
            del self.names[depth:]
            self._key = None

    def close(self) -> None:
        self.reset()

    def _push(self, name: bytes, fd: int) -> None:
        self.names.append(name)
        self._fds.append(fd)
        self._key = None

    def resolve(
        self, parts: list[bytes], *, create: bool, blocked: Blocked | None = None
    ) -> int | None:
        """Make this stack the directory `parts` names (symlinks resolved inside the tree);
        return its fd, or None if a component is missing (or not a directory) and not
        `create`. With `create`, missing directories are made (mode 0755)."""
        names = self.names
        if parts == names:
            return self._fds[-1]
        common = 0
        limit = min(len(parts), len(names))
        while common < limit and parts[common] == names[common]:
            common += 1
        self.reset(common)
        todo = parts[common:][::-1]
        hops = 0
        while todo:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                if self.names:
                    self.reset(len(self.names) - 1)
                continue
            parent = self._fds[-1]
            try:
                fd = os.open(part, DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(part, 0o755, dir_fd=parent)
                fd = os.open(part, _READ_DIR, dir_fd=parent)  # any dir fd serves as dir_fd
                os.fchmod(fd, 0o755)  # not the umask's
            except OSError as err:
                if err.errno not in _NOT_A_DIR:
                    raise
                st = os.stat(part, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        where = os.fsdecode(b"/".join(parts))
                        raise LayerError(f"too many symlinks resolving {where!r}") from None
                    target = os.readlink(part, dir_fd=parent)
                    if target.startswith(b"/"):
                        self.reset()
                    todo.extend(target.split(b"/")[::-1])
                    continue
                if not create:
                    return None
                if blocked is None or not blocked(parent, part, st):
                    where = os.fsdecode(b"/".join(parts))
                    raise LayerError(
                        f"layer entry under {where!r}: parent is not a directory"
                    ) from None
                fd = os.open(part, DIR_FLAGS, dir_fd=parent)
            self._push(part, fd)
        return self._fds[-1]

    def walk_strict(self, parts: list[bytes]) -> int | None:
        """Like `resolve` without following anything: every component must be a real
        directory (else None). For paths this applier resolved earlier."""
        names = self.names
        if parts == names:
            return self._fds[-1]
        common = 0
        limit = min(len(parts), len(names))
        while common < limit and parts[common] == names[common]:
            common += 1
        self.reset(common)
        for part in parts[common:]:
            try:
                fd = os.open(part, DIR_FLAGS, dir_fd=self._fds[-1])
            except OSError as err:
                if err.errno in (*_NOT_A_DIR, errno.ENOENT):
                    return None
                raise
            self._push(part, fd)
        return self._fds[-1]

    def path_of(self, name: bytes) -> bytes:
        """A path for `name` in `top` for the calls that take no dir fd (mknod with the
        signature tests patch, l*xattr): through /proc's handle on the fd itself, so it
        is exactly the directory resolved. Without /proc: the absolute path of the
        resolved components, all real directories a moment ago."""
        return path_at(self._fds[-1], name, self.root_path, self.names)


def path_at(dir_fd: int, name: bytes, root_path: bytes, names: list[bytes]) -> bytes:
    if _have_proc_fd():
        return b"/proc/self/fd/%d/%s" % (dir_fd, name)
    return b"/".join([root_path, *names, name])

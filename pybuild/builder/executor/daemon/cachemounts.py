"""`RUN --mount=type=cache`: persistent dirs under the root's cachemounts, with locks.

flock, so that the sharing modes hold across concurrent pybuild processes: shared takes
LOCK_SH on the instance; locked LOCK_EX, waiting; private the first instance nobody
uses (LOCK_EX without waiting), a new one if all are busy. The lock file's mtime is the
mount's last use (for `prune --filter until=`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import uuid

from pybuild.builder.executor.daemon import linux
from pybuild.builder.executor.daemon.cleanup import rmtree
from pybuild.builder.executor.protocol import CacheDir
from pybuild.builder.snapshot.mounts import mount_lowers


def _flock(path: str, flags: int) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def open_cache_dir(m: CacheDir, step_dir: str, i: int, stack: contextlib.ExitStack) -> str:
    """The dir of cache mount `m` (the `i`th mount of the step), made if new (seeded from
    `m.seed_lowers`), with the lock its sharing mode asks for, held until `stack` closes."""
    fd: int | None
    if m.sharing == "private":
        n = 0
        while True:
            path = m.dir if n == 0 else f"{m.dir}-{n}"
            fd = _flock(path + ".lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is not None:
                break
            n += 1
    else:
        path = m.dir
        fd = _flock(path + ".lock",
                    fcntl.LOCK_EX if m.sharing == "locked" else fcntl.LOCK_SH)
    if fd is not None:
        stack.callback(os.close, fd)
        os.utime(fd)
    if not os.path.isdir(path):
        _create(path, m, step_dir, i)
    return path


def _create(path: str, m: CacheDir, step_dir: str, i: int) -> None:
    tmp = f"{path}.new-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    if m.seed_lowers is not None:
        src = os.path.join(step_dir, f"seed{i}")
        os.makedirs(src, exist_ok=True)
        mount_lowers(src, m.seed_lowers, os.path.join(step_dir, "empty"))
        try:
            seed = os.path.join(src, m.seed_selector.lstrip("/"))
            if os.path.isdir(seed):
                shutil.copytree(seed, tmp, symlinks=True, dirs_exist_ok=True,
                                copy_function=_copy_with_owner)
                _chown_tree(seed, tmp)
        finally:
            with contextlib.suppress(OSError):
                linux.umount(src)
    os.chmod(tmp, m.mode)
    os.chown(tmp, m.uid, m.gid)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        rmtree(tmp)  # another build made it first


def _copy_with_owner(src: str, dst: str) -> None:
    shutil.copy2(src, dst, follow_symlinks=False)


def _chown_tree(src_root: str, dst_root: str) -> None:
    for dirpath, dirnames, filenames in os.walk(src_root):
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(dst_root, os.path.relpath(s, src_root))
            st = os.lstat(s)
            with contextlib.suppress(OSError):
                os.lchown(d, st.st_uid, st.st_gid)

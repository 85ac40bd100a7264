"""The libc calls the sandbox needs and Python lacks: mount, umount2, unshare, prctl.

The one ctypes wrapper of the tree (the daemon and the snapshotters use it). Failures
raise OSError with the errno, its text and the path, as Python's own calls do.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _fail(what: str, path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", path)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                   ctypes.c_ulong(flags), data.encode() if data else None) != 0:
        raise _fail("mount", target)


def umount(target: str, flags: int = MNT_DETACH) -> None:
    """Unmount `target` (lazily by default: MNT_DETACH)."""
    if _libc.umount2(target.encode(), flags) != 0:
        raise _fail("umount", target)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail("unshare")


def set_parent_death_signal(sig: int) -> None:
    """Get `sig` when the thread that started this process exits."""
    _libc.prctl(PR_SET_PDEATHSIG, sig)

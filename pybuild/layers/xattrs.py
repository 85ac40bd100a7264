"""Reading a path's extended attributes the way a layer should record them.

Overlay bookkeeping (user.overlay.*, trusted.overlay.*, user.fuseoverlayfs.*) is
never content; host-specific security labels (security.selinux, ima, evm) are not
portable. File capabilities are normalised to revision 2 so a capability written
inside a user namespace does not carry that namespace's root id into the image.
"""

from __future__ import annotations

import errno
import os
import struct

OVERLAY_PREFIXES = (
    "user.overlay.",
    "trusted.overlay.",
    "user.fuseoverlayfs.",
    "trusted.fuseoverlayfs.",
)
# The marks of an opaque directory, by whom they are written: the kernel overlay in a
# user namespace (`userxattr`, the one pybuild writes in lower dirs), as root, and
# fuse-overlayfs.
OPAQUE_XATTR = "user.overlay.opaque"
OPAQUE_XATTRS = (OPAQUE_XATTR, "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
CAPABILITY = "security.capability"
_KEPT_SYSTEM = ("system.posix_acl_access", "system.posix_acl_default")

_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_REVISION_2 = 0x02000000
_VFS_CAP_REVISION_3 = 0x03000000
_VFS_CAP_V2_SIZE = 20
_VFS_CAP_V3_SIZE = 24


def is_overlay_xattr(name: str) -> bool:
    return name.startswith(OVERLAY_PREFIXES)


def is_content_xattr(name: str) -> bool:
    """Whether an xattr belongs in a layer."""
    if is_overlay_xattr(name):
        return False
    if name.startswith(("user.", "trusted.")):
        return True
    return name == CAPABILITY or name in _KEPT_SYSTEM


def normalise_capability(value: bytes) -> bytes:
    """Turn a v3 (namespaced, with rootid) vfs_cap_data into v2."""
    if len(value) == _VFS_CAP_V3_SIZE:
        (magic,) = struct.unpack_from("<I", value)
        if magic & _VFS_CAP_REVISION_MASK == _VFS_CAP_REVISION_3:
            magic = (magic & ~_VFS_CAP_REVISION_MASK) | _VFS_CAP_REVISION_2
            return struct.pack("<I", magic) + value[4:_VFS_CAP_V2_SIZE]
    return value


def list_names(path: str | bytes) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA):
            return []
        raise


def get(path: str | bytes, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def read_split(path: str | bytes) -> tuple[dict[str, bytes], list[str]]:
    """(content xattrs with values, names of overlay bookkeeping xattrs)."""
    content: dict[str, bytes] = {}
    overlay: list[str] = []
    for name in list_names(path):
        if is_overlay_xattr(name):
            overlay.append(name)
        elif is_content_xattr(name):
            value = get(path, name)
            if value is None:
                continue
            if name == CAPABILITY:
                value = normalise_capability(value)
            content[name] = value
    return content, overlay


def read_content(path: str | bytes) -> dict[str, bytes]:
    return read_split(path)[0]

"""What an unpack may write of what grants privileges: devices, set-id bits, capabilities.

A snapshot keeps everything (containers see it through a user namespace and nodev
mounts); a directory on the host that its user then reads and runs gets HOST_SAFE.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HOST_SAFE", "KEEP_ALL", "FilePrivileges"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePrivileges:
    """Which privilege-carrying parts of a layer are written."""

    devices: bool = True  # block and character device nodes (whiteouts are not devices)
    setid: bool = True  # set-uid and set-gid bits of non-directories
    capabilities: bool = True  # the security.capability xattr


KEEP_ALL = FilePrivileges()
HOST_SAFE = FilePrivileges(devices=False, setid=False, capabilities=False)

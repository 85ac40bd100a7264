"""Look up a path in a stack of overlay lower dirs without mounting them.

Runs in the sandbox daemon (inside the user namespace), so owners read back as the
image's ids. Follows overlayfs' rules: the topmost entry wins, a 0/0 character device
(whiteout) or a non-directory hides everything below it, an opaque directory hides the
lower directories of the same path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from pybuild.builder.executor.protocol import PathEntry, PathProbe
from pybuild.layers import xattrs as xa


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    if os.path.exists(os.path.join(path, ".wh..wh..opq")):
        return True
    return any(xa.get(path, name) == b"y" for name in xa.OPAQUE_XATTRS)


def probe_path(lowers: Sequence[str], path: str) -> PathProbe:
    """The merged view of `path`'s components (see PathProbe); `lowers` is top first."""
    parts = [p for p in path.split("/") if p and p != "."]
    visible = list(lowers)
    chain: list[PathEntry] = []
    rel = ""
    for part in parts:
        rel = f"{rel}/{part}" if rel else part
        top: tuple[str, os.stat_result] | None = None
        below: list[str] = []
        for lower in visible:
            candidate = os.path.join(lower, rel)
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if _is_whiteout(st):
                break
            if top is None:
                top = (candidate, st)
            if not stat.S_ISDIR(st.st_mode):
                break
            below.append(lower)
            if _opaque(candidate):
                break
        if top is None:
            return PathProbe(chain=tuple(chain), missing=True)
        found, st = top
        chain.append(PathEntry(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                               mtime_ns=st.st_mtime_ns,
                               xattrs=tuple(xa.read_content(found).items())))
        if not stat.S_ISDIR(st.st_mode):
            break
        visible = below
    return PathProbe(chain=tuple(chain), missing=False)

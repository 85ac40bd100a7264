"""Mount points pybuild makes in a step's rootfs, and keeps out of its layer.

/proc, /dev, /sys, /etc/hosts and mount targets such as /run/secrets/x are made if the
image lacks them, removed after the step, and the dirs that were copied up only because
of them are pruned from the upper, so none of them reaches the layer.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from pybuild.builder.executor.users import resolve_in_root
from pybuild.errors import UserError
from pybuild.layers.xattrs import OPAQUE_XATTRS, list_names


@dataclass(slots=True)
class Stubs:
    """The mount points made in a rootfs, with the existing ancestors their creation
    copied up (relative path, (mode, uid, gid) before)."""

    created: list[str] = field(default_factory=list)
    ancestors: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)


def prepare(root: str, destinations: Sequence[tuple[str, bool]], stubs: Stubs) -> None:
    """Create the missing mount points (dirs, or empty files for file binds: the bool),
    resolving symlinks inside the rootfs as the runtime will; record them in `stubs`."""
    recorded: set[str] = set()
    for dest, is_file in destinations:
        parts = [p for p in dest.split("/") if p]
        for i in range(len(parts)):
            cur = resolve_in_root(root, "/" + "/".join(parts[: i + 1]))
            if os.path.lexists(cur):
                continue
            parent = os.path.dirname(cur)
            if not any(parent == c or parent.startswith(c + "/") for c in stubs.created):
                # The first missing component: every existing dir above it is copied up.
                rel = os.path.relpath(parent, root)
                while rel not in (".", "") and rel not in recorded:
                    recorded.add(rel)
                    st = os.lstat(os.path.join(root, rel))
                    stubs.ancestors.append((rel, (st.st_mode, st.st_uid, st.st_gid)))
                    rel = os.path.dirname(rel)
            if i == len(parts) - 1 and is_file:
                with open(cur, "w"):
                    pass
            else:
                os.mkdir(cur, 0o755)
            stubs.created.append(cur)


def remove(stubs: Stubs) -> None:
    """Remove the mount points made (those still empty), deepest first."""
    for path in reversed(stubs.created):
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)
    stubs.created.clear()


def prune_copied_up(upper: str, stubs: Stubs) -> None:
    """Dirs that are in the upper only because a mount point was made in them: if they are
    now empty and unchanged (mode, owner, no opaque mark), drop them so that the lower
    shows through and they stay out of the layer."""
    for rel, before in sorted(stubs.ancestors, key=lambda a: -a[0].count("/")):
        path = os.path.join(upper, rel)
        try:
            st = os.lstat(path)
            if (not stat.S_ISDIR(st.st_mode) or os.listdir(path)
                    or (st.st_mode, st.st_uid, st.st_gid) != before
                    or any(a in OPAQUE_XATTRS for a in list_names(path))):
                continue
            os.rmdir(path)
        except OSError:
            continue


def is_file_like(path: str) -> bool:
    """A bind source that needs a file (not a dir) as its mount point."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def make_workdir(root: str, cwd: str, uid: int, gid: int) -> None:
    """BuildKit creates a missing working dir with MkdirAllAndChown(0755, the user)."""
    parts = [p for p in cwd.split("/") if p]
    for i in range(len(parts)):
        real = resolve_in_root(root, "/" + "/".join(parts[: i + 1]))
        if os.path.isdir(real):
            continue
        if os.path.lexists(real):
            raise UserError(f"working directory {cwd} is not a directory in the image")
        os.mkdir(real, 0o755)
        with contextlib.suppress(OSError):
            os.lchown(real, uid, gid)

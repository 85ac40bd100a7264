"""Snapshotters: how a RUN/COPY step gets a writable root over read-only snapshot dirs.

Three mechanisms, chosen once per build by a probe inside the sandbox namespace (or forced
with `PYBUILD_SNAPSHOTTER=overlay|fuse-overlayfs|copy`):

- `overlay`: kernel overlayfs with `userxattr` (Linux >= 5.11 in a user namespace);
- `fuse-overlayfs`: the FUSE implementation (needs a usable /dev/fuse);
- `copy`: the lowers are copied into a plain dir and the step's changes are found by
  comparing it with a record of the copied tree afterwards (always works, slowest).

Each produces an overlay-format upper dir (0/0 char-device whiteouts, opaque xattrs), so
`pybuild.layers.diff` turns any of them into a layer, and the upper becomes a snapshot.
These modules run inside the sandbox daemon (they need mount privileges).
"""

from pybuild.builder.snapshot.mounts import (
    SNAPSHOTTERS,
    CopySnapshotter,
    FuseOverlaySnapshotter,
    MountedRoot,
    OverlaySnapshotter,
    Snapshotter,
    make_snapshotter,
    probe,
)

__all__ = [
    "SNAPSHOTTERS",
    "CopySnapshotter",
    "FuseOverlaySnapshotter",
    "MountedRoot",
    "OverlaySnapshotter",
    "Snapshotter",
    "make_snapshotter",
    "probe",
]

"""A step's root: its lowers and a fresh upper, mounted by the build's snapshotter."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence

from pybuild.builder.executor.protocol import SnapshotterNotice
from pybuild.builder.snapshot.mounts import ENV_VAR as SNAPSHOTTER_ENV
from pybuild.builder.snapshot.mounts import MountedRoot, Snapshotter, make_snapshotter, probe


class SnapshotterChoice:
    """The snapshotter of this daemon (i.e. of one build), probed on first use; the
    first use also leaves a notice saying which it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshotter: Snapshotter | None = None
        self._notice: SnapshotterNotice | None = None

    def get(self, step_dir: str) -> Snapshotter:
        """The snapshotter; probed (in a scratch dir beside `step_dir`) the first time."""
        with self._lock:
            if self._snapshotter is None:
                scratch = f"{step_dir}.probe-{uuid.uuid4().hex[:6]}"
                name, why = probe(scratch, os.environ.get(SNAPSHOTTER_ENV, ""))
                self._snapshotter = make_snapshotter(name)
                self._notice = SnapshotterNotice(name=name, why=why)
            return self._snapshotter

    def take_notice(self) -> SnapshotterNotice | None:
        with self._lock:
            notice, self._notice = self._notice, None
            return notice


@contextlib.contextmanager
def mounted_root(snapshotter: Snapshotter, step_dir: str,
                 lowers: Sequence[str]) -> Iterator[MountedRoot]:
    """The step's root at step_dir/merged, over `lowers`, with a fresh upper; released
    (the upper complete) on exit."""
    root = MountedRoot(
        step_dir=step_dir, merged=os.path.join(step_dir, "merged"),
        upper=os.path.join(step_dir, "upper"), work=os.path.join(step_dir, "work"),
        lowers=list(lowers))
    for d in (root.upper, root.work, root.merged):
        os.makedirs(d, exist_ok=True)
    os.chmod(root.upper, 0o755)
    snapshotter.mount(root)
    try:
        yield root
    finally:
        snapshotter.release(root)

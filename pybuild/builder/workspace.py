"""A build's scratch space under the root's sandbox dir, and the sandbox dir itself.

Scratch dirs (`sandbox/tmp/build-<id>`) belong to one running build, which holds an flock
on `build-<id>.lock`; a later build removes the dirs of builds that died (their locks are
free). The lock file appears already locked (made under a temporary name, locked, then
renamed into place) and before its dir, so a neighbour's sweep can never mistake a
starting build for a dead one.

The sandbox dir is owned by the build namespace's root and closed to everyone else
(0700): its snapshots keep the image's modes, set-uid files included, and no local user
may run or read them. Containers see snapshots through their overlay mounts only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from pybuild.builder.events import EventSink, Notice
from pybuild.errors import UserError

SANDBOX_MODE = 0o700


@contextlib.contextmanager
def build_dir(tmp: Path) -> Iterator[Path]:
    """This build's scratch dir under `tmp`, held by an flock while the build runs."""
    tmp.mkdir(parents=True, exist_ok=True)
    name = f"build-{uuid.uuid4().hex[:12]}"
    path = tmp / name
    lock = tmp / f"{name}.lock"
    staging = tmp / f".{name}.lock-new"
    fd = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(staging, lock)
        path.mkdir()
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def stale_build_dirs(tmp: Path) -> list[Path]:
    """Scratch dirs of builds that are no longer running (killed pybuild processes); their
    lock files are removed on the way."""
    out: list[Path] = []
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return out
    for name in names:
        if not name.startswith("build-") or name.endswith(".lock"):
            continue
        lock = tmp / f"{name}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            out.append(tmp / name)  # its build ended, or died, after removing its lock
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # alive
        else:
            out.append(tmp / name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
        finally:
            os.close(fd)
    return out


def check_traversable(root: Path) -> None:
    """A root build's steps run as a shifted, unprivileged id: it must reach `root`."""
    for parent in [*reversed(root.parents), root]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise UserError(
                f"the pybuild root {root} is under {parent}, which other users cannot "
                "enter; builds run by root execute their steps as an unprivileged id",
                hint="use a root such as /var/lib/pybuild (the default), or "
                     f"`chmod o+x {parent}`")


def prepare_sandbox_dirs(sandbox: Path, subdirs: tuple[Path, ...], idmap_key: str,
                         owner: tuple[int, int], events: EventSink) -> None:
    """Make the sandbox dir and `subdirs`, owned by the namespace's root (`owner`, the
    outside ids of container root) and closed to other users. A changed id map retires
    the snapshots made under the old one (they are only unpacked copies of blobs)."""
    # One build at a time looks at and fixes the sandbox dir: a neighbour starting at the
    # same moment on a fresh root must not take its half-made dir for a stale one.
    lock = os.open(sandbox.with_name("sandbox.lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
                   0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _prepare(sandbox, subdirs, idmap_key, owner, events)
    finally:
        os.close(lock)


def _prepare(sandbox: Path, subdirs: tuple[Path, ...], idmap_key: str,
             owner: tuple[int, int], events: EventSink) -> None:
    from pybuild.builder.executor import snapshots

    marker = sandbox / "idmap"
    if sandbox.is_dir():
        try:
            old = marker.read_text()
        except FileNotFoundError:
            old = ""
        if old != idmap_key:
            retired = sandbox.with_name(f"sandbox.retired-{uuid.uuid4().hex[:8]}")
            os.rename(sandbox, retired)
            events(Notice(f"the user namespace id map changed; old snapshots moved to "
                          f"{retired} (safe to delete)", level="warning"))
    format_marker = sandbox / snapshots.MARKER
    snapshot_dir, scratch = sandbox / "snapshots", sandbox / "tmp"
    if snapshots.retire_old(snapshot_dir, scratch, format_marker) is not None:
        events(Notice("snapshots unpacked by an older pybuild were never checked against "
                      "their images' diff_ids: they are unpacked again as needed"))
    as_root = os.geteuid() == 0
    for d in (sandbox, *subdirs):
        d.mkdir(parents=True, exist_ok=True)
        if as_root:
            os.chown(d, *owner)
    os.chmod(sandbox, SANDBOX_MODE)
    if as_root and owner[0] != 0:
        check_traversable(sandbox.parent)
    if not marker.is_file() or marker.read_text() != idmap_key:
        marker.write_text(idmap_key)
    snapshots.mark_current(format_marker)

"""Scratch dirs of running builds: a neighbour's sweep never takes a live build's dir (F6),
and the sandbox dir is closed to other users (F3)."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from pybuild.builder import workspace
from pybuild.builder.events import Event


def test_a_running_build_is_never_swept(tmp_path: Path) -> None:
    with workspace.build_dir(tmp_path) as mine:
        assert mine.is_dir()
        # Every lock file that exists is already held: the sweep sees a live build.
        assert workspace.stale_build_dirs(tmp_path) == []
        assert mine.is_dir() and Path(f"{mine}.lock").exists()
    assert not Path(f"{mine}.lock").exists()


def test_the_sweep_never_sees_a_starting_build(tmp_path: Path, monkeypatch: object) -> None:
    """The window F6 raced in: between creating the lock file and locking it. The lock
    file appears (renamed into place) only once it is locked."""
    seen: list[list[Path]] = []
    real_rename = os.rename

    def sweeping_rename(src: str | Path, dst: str | Path) -> None:
        seen.append(workspace.stale_build_dirs(tmp_path))  # a neighbour sweeps right now
        real_rename(src, dst)
        seen.append(workspace.stale_build_dirs(tmp_path))

    import pytest

    mp = pytest.MonkeyPatch()
    mp.setattr(workspace.os, "rename", sweeping_rename)
    try:
        with workspace.build_dir(tmp_path) as mine:
            assert mine.is_dir()
            assert workspace.stale_build_dirs(tmp_path) == []
    finally:
        mp.undo()
    assert seen == [[], []]


def test_dead_builds_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / "build-0123456789ab"
    dead.mkdir()
    lock = tmp_path / "build-0123456789ab.lock"
    lock.write_text("")  # its owner died: nobody holds it
    lockless = tmp_path / "build-ba9876543210"
    lockless.mkdir()
    live = tmp_path / "build-aaaaaaaaaaaa"
    live.mkdir()
    fd = os.open(tmp_path / "build-aaaaaaaaaaaa.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert sorted(workspace.stale_build_dirs(tmp_path)) == sorted([dead, lockless])
        assert not lock.exists()
    finally:
        os.close(fd)


def test_the_sandbox_dir_is_closed_to_other_users(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    events: list[Event] = []
    owner = (os.geteuid(), os.getegid())
    workspace.prepare_sandbox_dirs(sandbox, (sandbox / "snapshots",), "key", owner,
                                   events.append)
    assert stat.S_IMODE(sandbox.stat().st_mode) == 0o700
    assert (sandbox / "snapshots").is_dir() and (sandbox / "idmap").read_text() == "key"
    sandbox.chmod(0o755)  # a root made by an older pybuild is closed on its next build
    workspace.prepare_sandbox_dirs(sandbox, (sandbox / "snapshots",), "key", owner,
                                   events.append)
    assert stat.S_IMODE(sandbox.stat().st_mode) == 0o700 and not events
    # A changed id map retires the old snapshots (with a notice) and starts afresh.
    workspace.prepare_sandbox_dirs(sandbox, (sandbox / "snapshots",), "other", owner,
                                   events.append)
    assert [e for e in events if "id map changed" in getattr(e, "text", "")]
    assert stat.S_IMODE(sandbox.stat().st_mode) == 0o700
    retired = [p for p in tmp_path.iterdir() if p.name.startswith("sandbox.retired-")]
    assert len(retired) == 1

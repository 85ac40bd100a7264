"""Snapshots made before the sandbox verified diff_ids are retired once."""

from __future__ import annotations

from pathlib import Path

from pybuild.builder.executor import snapshots


def _root(tmp_path: Path) -> tuple[Path, Path, Path]:
    sandbox = tmp_path / "sandbox"
    (sandbox / "snapshots").mkdir(parents=True)
    return sandbox / "snapshots", sandbox / "tmp", sandbox / snapshots.MARKER


def test_old_snapshots_move_to_the_scratch_area_as_a_dead_builds_dir(tmp_path: Path) -> None:
    snaps, scratch, marker = _root(tmp_path)
    (snaps / "abc").mkdir()
    retired = snapshots.retire_old(snaps, scratch, marker)
    assert retired is not None and retired.parent == scratch
    assert retired.name.startswith("build-")  # swept by the next sandbox, from inside
    assert (retired / "abc").is_dir() and not snaps.exists()
    snaps.mkdir()
    snapshots.mark_current(marker)
    (snaps / "def").mkdir()
    assert snapshots.retire_old(snaps, scratch, marker) is None  # once
    assert (snaps / "def").is_dir()


def test_an_empty_or_missing_snapshots_dir_needs_no_retiring(tmp_path: Path) -> None:
    snaps, scratch, marker = _root(tmp_path)
    assert snapshots.retire_old(snaps, scratch, marker) is None
    snaps.rmdir()
    assert snapshots.retire_old(snaps, scratch, marker) is None
    assert not scratch.exists()

"""The copy snapshotter (the fallback when no overlay can be mounted) finds what a step
changed by comparing the rootfs with a record taken after copying the lowers."""

from __future__ import annotations

import os
from pathlib import Path

from pybuild.builder.snapshot.mounts import CopySnapshotter, MountedRoot


def _root(tmp_path: Path) -> MountedRoot:
    lower = tmp_path / "lower"
    (lower / "d" / "sub").mkdir(parents=True)
    (lower / "d" / "old.txt").write_text("old")
    (lower / "d" / "sub" / "deep.txt").write_text("deep")
    (lower / "keep").mkdir()
    root = MountedRoot(step_dir=str(tmp_path), merged=str(tmp_path / "merged"),
                       upper=str(tmp_path / "upper"), work=str(tmp_path / "work"),
                       lowers=[str(lower)])
    for d in (root.merged, root.upper, root.work):
        os.makedirs(d)
    return root


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "user.overlay.opaque") == b"y"
    except OSError:
        return False


def test_a_directory_made_anew_is_opaque_even_with_a_reused_inode(tmp_path: Path) -> None:
    root = _root(tmp_path)
    snap = CopySnapshotter()
    snap.mount(root)
    merged = Path(root.merged)
    # `rm -rf d && mkdir d`; ext4 may give the new directory the old inode number, which
    # the record cannot tell apart: pretend it did.
    ino = (merged / "d").lstat().st_ino
    for p in sorted((merged / "d").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (merged / "d").rmdir()
    (merged / "d").mkdir()
    (merged / "d" / "new.txt").write_text("new")
    before = snap._before[root.merged]
    assert ino != 0
    before["d"] = ((merged / "d").lstat().st_ino, *before["d"][1:])
    snap.release(root)
    upper = Path(root.upper)
    assert _opaque(upper / "d")
    assert (upper / "d" / "new.txt").read_text() == "new"
    # The opaque dir hides the old children: no whiteout is needed (or wanted) below it.
    assert sorted(p.name for p in (upper / "d").iterdir()) == ["new.txt"]
    assert not (upper / "keep").exists()
    # The marker pybuild put on the copied directories never reaches the upper dir.
    assert "user.pybuild.original" not in os.listxattr(upper / "d")


def test_an_untouched_directory_with_a_removed_child_gets_a_whiteout(tmp_path: Path) -> None:
    root = _root(tmp_path)
    snap = CopySnapshotter()
    snap.mount(root)
    (Path(root.merged) / "d" / "old.txt").unlink()
    snap.release(root)
    upper = Path(root.upper)
    assert not _opaque(upper / "d")
    wh = (upper / "d" / "old.txt").lstat()
    assert os.major(wh.st_rdev) == 0 and os.minor(wh.st_rdev) == 0


def test_a_repeated_lower_is_stacked_once_at_its_topmost_place(tmp_path: Path) -> None:
    from pybuild.builder.snapshot.mounts import distinct_lowers

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    (b / "only-b").write_text("b")
    assert distinct_lowers([str(a), str(b), str(a)]) == [str(a), str(b)]
    root = MountedRoot(step_dir=str(tmp_path), merged=str(tmp_path / "m"),
                       upper=str(tmp_path / "u"), work=str(tmp_path / "w"),
                       lowers=[str(a), str(b), str(a)])
    assert root.lowers == [str(a), str(b)]
    for d in (root.merged, root.upper, root.work):
        os.makedirs(d)
    snap = CopySnapshotter()
    snap.mount(root)
    assert (Path(root.merged) / "x").read_text() == "a"  # the top copy of A wins
    assert (Path(root.merged) / "only-b").read_text() == "b"
    snap.release(root)

"""Snapshots are what their names say, and sandbox failures are one clear line.

A snapshot is shared by every image whose config names the same diff_id, so the sandbox
publishes one only under the diff_id it computed while unpacking (issue 9, F2: an image
claiming busybox's diff_id for other content decided what every `FROM busybox` saw).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from pybuild.digest import Digest
from tests.integration.conftest import rootless_root, run_pybuild, traversable_dir
from tests.integration.test_executor_support import (
    busybox_layer,
    craft_image,
    gzip_bytes,
    last_layer,
    with_file,
    write_context,
)
from tests.tooling import missing

USER = "pbtester"


def _write_poisoning(base_layout: Path, work: Path) -> tuple[Path, Path, Path, str]:
    """The reproduction of faults-found F2: busybox's layer plus /pwned, under busybox's
    diff_id; the attacker's context and the victim's. (evil layout, attack, victim,
    diff_id)"""
    blob, diff_id = busybox_layer(base_layout)
    evil = craft_image(base_layout, work / "evil", "1",
                       [with_file(blob, "pwned", b"attacker content\n")], [diff_id])
    attack = write_context(work / "attack", "FROM attacker/tool:1\nRUN true\n")
    victim = write_context(work / "victim", "FROM busybox:latest\n"
                           "RUN cat /pwned > /seen 2>/dev/null || echo clean > /seen\n")
    return evil, attack, victim, diff_id


def _attack_then_victim(root: Path, evil: Path, attack: Path, victim: Path, diff_id: str,
                        out: Path, user: str | None = None) -> None:
    """The attacker's build must fail cleanly, and a later FROM busybox see busybox."""
    r = run_pybuild(root, "load", "-i", str(evil), "-t", "attacker/tool:1", user=user)
    if r.code == 0:  # (`load` may refuse it itself, which is as good)
        r = run_pybuild(root, "build", str(attack), user=user)
        assert r.code == 1, r.err
        assert f"the image config claims diff_id {diff_id}" in r.err
        assert "Traceback" not in r.err and "internal error" not in r.err
    else:
        assert "diff_id" in r.err and "Traceback" not in r.err
    r = run_pybuild(root, "build", "-t", "victim:1", str(victim), user=user)
    assert r.code == 0, r.err
    assert last_layer(root, "victim:1", out, user=user)["seen"].data == b"clean\n"


def test_an_image_claiming_another_images_diff_id_poisons_nothing(
        fresh_root: Path, base_layout: Path, tmp_path: Path, trav: Path) -> None:
    _attack_then_victim(fresh_root, *_write_poisoning(base_layout, trav), out=tmp_path)


@pytest.mark.requires("root", "newuidmap")
def test_no_poisoning_as_an_unprivileged_user(base_layout: Path) -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        missing(f"test user {USER} does not exist (run scripts/setup.sh as root)")
    work = traversable_dir("pybuild-poison-")
    try:
        paths = _write_poisoning(base_layout, work)
        (work / "out").mkdir()
        root = rootless_root(work, USER, base_layout)
        _attack_then_victim(root, *paths, out=work / "out", user=USER)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def test_snapshots_of_an_older_pybuild_are_retired_once(fresh_root: Path,
                                                        tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "c1", "FROM busybox\nRUN true\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 0, r.err
    sandbox = fresh_root / "sandbox"
    # An older root: no format marker, and a snapshot that is not what its name says.
    (sandbox / "snapshots-format").unlink()
    snap = next(p for p in (sandbox / "snapshots").iterdir())
    poison = snap / "pwned"
    poison.write_text("stale\n")
    st = snap.stat()
    os.chown(poison, st.st_uid, st.st_gid)
    ctx = write_context(tmp_path / "c2", "FROM busybox\n"
                        "RUN cat /pwned > /seen 2>/dev/null || echo clean > /seen\n")
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "-t", "fresh:1", str(ctx))
    assert r.code == 0, r.err
    assert "snapshots unpacked by an older pybuild" in r.err
    assert last_layer(fresh_root, "fresh:1", tmp_path)["seen"].data == b"clean\n"
    assert not [n for n in os.listdir(sandbox / "tmp") if n.startswith("build-")]
    # Once: the next build keeps the (verified) snapshots.
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "--no-cache", str(ctx))
    assert r.code == 0, r.err
    assert "older pybuild" not in r.err


def test_a_layer_that_is_no_tar_is_named_in_the_error(fresh_root: Path, base_layout: Path,
                                                     tmp_path: Path, trav: Path) -> None:
    junk = b"not a tar " * 200
    layout = craft_image(base_layout, trav / "junk", "1", [gzip_bytes(junk)],
                         [str(Digest.from_bytes(junk))])
    r = run_pybuild(fresh_root, "load", "-i", str(layout), "-t", "junk:1")
    assert r.code == 0, r.err
    ctx = write_context(tmp_path / "ctx", "FROM junk:1\nRUN true\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1, r.err
    layer = Digest.from_bytes(gzip_bytes(junk))
    assert f"RUN: layer {layer}: " in r.err, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err


@pytest.mark.requires("root")
def test_an_unreadable_blob_is_one_line_naming_the_operation_and_path(
        fresh_root: Path, tmp_path: Path) -> None:
    # A root build's sandbox runs as a mapped id: a blob only host root may read is a
    # permission error for it, reported as such (not the daemon's traceback).
    blobs = fresh_root / "content" / "blobs" / "sha256"
    layer = max(blobs.iterdir(), key=lambda p: p.stat().st_size)  # busybox's layer
    layer.chmod(0o600)
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nRUN true\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1, r.err
    assert f"unpacking layer sha256:{layer.name}" in r.err
    assert "Permission denied" in r.err and str(layer) in r.err
    assert "Traceback" not in r.err and "internal error" not in r.err


@pytest.mark.requires("root")
def test_a_full_disk_in_a_step_is_one_line_with_a_hint(base_layout: Path,
                                                              tmp_path: Path) -> None:
    mnt = traversable_dir("pybuild-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    try:
        root = mnt / "root"
        r = run_pybuild(root, "load", "-i", str(base_layout), "-t", "busybox:latest")
        assert r.code == 0, r.err
        ctx = write_context(tmp_path / "ctx", "FROM busybox\n"
                            "RUN dd if=/dev/zero of=/big bs=1M count=9 2>/dev/null\n")
        r = run_pybuild(root, "build", str(ctx))
        assert r.code == 1, r.err
        assert "No space left on device" in r.err and "running the step in" in r.err
        assert "hint: free some disk space" in r.err
        assert "Traceback" not in r.err and "internal error" not in r.err
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)

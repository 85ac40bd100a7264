"""`pybuild du` and `pybuild prune` (--all, --filter until=, --keep-storage) through the CLI:
what goes, what stays, and that the store keeps working afterwards."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from tests.integration.conftest import run_pybuild

DOCKERFILE = """\
FROM busybox
RUN --mount=type=cache,target=/cache,id=pkgs \\
    if [ -f /cache/seen ]; then echo WARM > /state; else echo COLD > /state; fi; \\
    touch /cache/seen
RUN echo second > /second
"""


def _build(root: Path, ctx: Path, tag: str = "p:1") -> list[str]:
    r = run_pybuild(root, "build", "--progress", "rawjson", "-t", tag, str(ctx))
    assert r.code == 0, r.err
    return [json.loads(x)["name"] for x in r.out.splitlines()
            if x.startswith("{") and json.loads(x)["type"] == "VertexStarted"]


def _state(root: Path, tmp_path: Path, tag: str = "p:1") -> str:
    out = tmp_path / f"out-{time.monotonic_ns()}"
    r = run_pybuild(root, "export", tag, "-o", f"type=local,dest={out}")
    assert r.code == 0, r.err
    return (out / "state").read_text().strip()


def _prune(root: Path, *flags: str) -> str:
    r = run_pybuild(root, "prune", *flags)
    assert r.code == 0, r.err
    return r.out


def _mounts(root: Path) -> list[Path]:
    base = root / "sandbox" / "cachemounts"
    return [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []


def test_prune_levels(fresh_root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    assert len(_build(fresh_root, ctx)) == 2
    assert _state(fresh_root, tmp_path) == "COLD"
    du = run_pybuild(fresh_root, "du").out
    assert "cache" in du and "p:1" in du

    # A downloaded source (what ADD <url> keeps), fresh, and an old one.
    sources = fresh_root / "cache" / "http"
    for name, age in (("fresh", 0.0), ("old", 3 * 86400.0)):
        (sources / name).mkdir(parents=True)
        (sources / name / "data").write_text(name)
        (sources / name / "lock").write_text("")
        then = time.time() - age
        for p in (sources / name / "lock", sources / name):
            os.utime(p, (then, then))

    # Plain prune: unreferenced blobs only; every step stays cached, mounts stay.
    _prune(fresh_root)
    assert _build(fresh_root, ctx) == []
    assert len(_mounts(fresh_root)) == 1

    # until=24h: only what was not used for a day (the old download).
    out = _prune(fresh_root, "--filter", "until=24h")
    assert "1 cache mounts or downloads" in out, out
    assert (sources / "fresh").is_dir() and not (sources / "old").exists()
    assert _build(fresh_root, ctx) == [] and len(_mounts(fresh_root)) == 1

    # A cache mount another build holds is left alone, even by --all.
    lock = _mounts(fresh_root)[0].with_name(_mounts(fresh_root)[0].name + ".lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        _prune(fresh_root, "--all")
        assert len(_mounts(fresh_root)) == 1
    finally:
        os.close(fd)

    # --all: records, mounts and downloads go; the image stays whole and usable.
    out = _prune(fresh_root, "--all")
    assert "cache records" in out
    assert _mounts(fresh_root) == [] and not (sources / "fresh").exists()
    assert _state(fresh_root, tmp_path) == "COLD"
    # Nothing is cached any more, and the cache mount starts empty again.
    assert len(_build(fresh_root, ctx, "p:2")) == 2
    assert _state(fresh_root, tmp_path, "p:2") == "COLD"
    assert len(_build(fresh_root, ctx, "p:3")) == 0


def test_keep_storage_drops_least_recently_used_records(fresh_root: Path,
                                                         tmp_path: Path) -> None:
    ctxs = []
    for i in range(2):
        ctx = tmp_path / f"ctx{i}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM busybox\nRUN head -c 300000 /dev/urandom > /blob{i}\n")
        ctxs.append(ctx)
    _build(fresh_root, ctxs[0], "k:0")
    time.sleep(0.05)
    _build(fresh_root, ctxs[1], "k:1")
    for tag in ("k:0", "k:1"):
        assert run_pybuild(fresh_root, "rmi", tag).code == 0
    # Room for one 300 kB layer besides the base image (about 2.03 MB): the least
    # recently used record goes.
    base = sum(p.stat().st_size for p in (fresh_root / "content").rglob("*") if p.is_file()
               and p.stat().st_size > 500_000 and p.stat().st_size < 1_200_000)
    _prune(fresh_root, "--keep-storage", str(base + 450_000))
    assert _build(fresh_root, ctxs[1], "k:1") == []
    assert len(_build(fresh_root, ctxs[0], "k:0")) == 1


def test_a_build_over_the_gc_limit_keeps_its_result_and_shrinks_the_store(
        fresh_root: Path, tmp_path: Path) -> None:
    """Regression (issue 15 defect 1, F4): auto-GC ran `asyncio.run` inside the build's
    event loop, crashed the build and lost its tag, once the store was over the limit."""
    from pybuild.content.walk import reachable
    from pybuild.oci.validate import validate_image
    from pybuild.root import Root

    old = tmp_path / "old"
    old.mkdir()
    (old / "Dockerfile").write_text(
        "FROM busybox\nRUN head -c 2000000 /dev/urandom > /big\n")
    _build(fresh_root, old, tag="old:1")
    root = Root(fresh_root)
    old_layers = {d for d in reachable(root.content, [root.images.get("old:1").descriptor])}
    assert run_pybuild(fresh_root, "rmi", "old:1").code == 0  # only its cache record holds it
    new = tmp_path / "new"
    new.mkdir()
    (new / "Dockerfile").write_text("FROM busybox\nRUN echo new > /new\n")
    r = run_pybuild(fresh_root, "build", "-t", "new:1", str(new),
                    env={"PYBUILD_GC_KEEP_STORAGE": "1"})
    assert r.code == 0, r.err
    assert "internal error" not in r.err and "Traceback" not in r.err
    desc = root.images.get("new:1").descriptor
    assert validate_image(root.content, desc) == [str(desc.digest)]
    base = reachable(root.content, [root.images.get("busybox:latest").descriptor])
    gone = old_layers - base - reachable(root.content, [desc])
    assert gone and not any(root.content.has(d) for d in gone)  # the store shrank

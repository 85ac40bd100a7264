"""F14: a killed export leaves a temp file in content/ingest; it belongs to a dead process,
so the next command that opens the store (a build's start, prune, du) removes it, at any
age. A live writer's file is kept, and counted in the store's usage."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ContainerConfig, History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from tests.integration.conftest import REPO, run_pybuild

LAYER_MIB = 160  # incompressible: gzip takes seconds, long enough to be killed half-way


def _big_image(root: Path) -> None:
    store = ContentStore(root / "content")
    with store.writer() as w, open("/dev/urandom", "rb") as rnd:
        for _ in range(LAYER_MIB):
            w.write(rnd.read(1 << 20))
        size = w.size
        layer = w.commit()
    config = ImageConfig(architecture="amd64", config=ContainerConfig(),
                         diff_ids=(layer,), history=(History(created_by="random"),))
    raw_config = config.encode()
    manifest = Manifest(media_type=mt.OCI_MANIFEST, config=Descriptor(
        media_type=mt.OCI_CONFIG, digest=store.write(raw_config), size=len(raw_config)),
        layers=(Descriptor(media_type=mt.OCI_LAYER, digest=layer, size=size),))
    raw = manifest.encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(raw), size=len(raw))
    ImageStore(root / "images").put("big:1", desc, "2024-01-01T00:00:00Z")


def _ingest(root: Path) -> list[Path]:
    """What is in ingest/, looked at without opening the store (which would sweep it)."""
    return sorted(p for p in (root / "content" / "ingest").iterdir()
                  if not p.name.startswith("owner@"))


def _kill_export_half_way(root: Path, out: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(root), "export",
                             "big:1", "-o", f"type=oci,dest={out}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            partial = [p for p in _ingest(root) if p.name.startswith("recompress@")]
            if partial and partial[0].stat().st_size > (8 << 20):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return partial[0]
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        raise AssertionError("the export never started compressing")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_killed_export_is_swept_by_prune_and_by_the_next_start(trav: Path) -> None:
    root = trav / "root"
    _big_image(root)
    left = _kill_export_half_way(root, trav / "out.tar")
    assert left.exists() and left.stat().st_size > (8 << 20)
    assert not (trav / "out.tar").exists() and not list(trav.glob(".out.tar.*"))
    # It is a minute old, not an hour: prune removes it anyway (its owner is dead).
    r = run_pybuild(root, "prune", "-a")
    assert r.code == 0, r.err
    assert not left.exists()
    assert _ingest(root) == []

    # Killed again: the next command's start (here `images`) sweeps it, before any prune.
    _big_image(root)
    left = _kill_export_half_way(root, trav / "out.tar")
    assert left.exists()
    assert run_pybuild(root, "images").code == 0
    assert not left.exists()
    assert _ingest(root) == []
    # the dead exporter's owner lock went too; what is left is held (this test's own)
    for lock in (root / "content" / "ingest").iterdir():
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


_LIVE_WRITER = """
import sys, time
from pathlib import Path
from pybuild.content.store import ContentStore
store = ContentStore(Path(sys.argv[1]))
w = store.writer()
w.write(b"x" * (3 << 20))
w._file.flush()
print("ready", flush=True)
time.sleep(600)
"""


def test_a_live_writers_file_is_kept_and_counted(trav: Path) -> None:
    root = trav / "root"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", _LIVE_WRITER, str(root / "content")],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        (live,) = _ingest(root)
        assert live.name.startswith("blob@")
        assert run_pybuild(root, "prune", "-a").code == 0
        assert live.exists()  # a running process's write is never taken
        usage = ContentStore(root / "content").usage()
        assert usage.ingest >= 3 << 20 and usage.total == usage.blobs + usage.ingest
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    ContentStore(root / "content")  # opening the store sweeps the dead writer's file
    assert _ingest(root) == []

"""`COPY dir/ /new/` writes its layer straight from the context (context/layer.py).

A cold COPY of many files writes that layer before its cache key, recording the files'
digests in the stat cache as it reads them (ops.file.FileHandler._prewrite). The shortcut
must give exactly the layer the general way gives (extract onto the overlay,
diff the upper dir): with SOURCE_DATE_EPOCH both are reproducible, so the layer digests
must be equal. The general way is forced by patching the shortcut out in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, traversable_dir

DOCKERFILE = """\
FROM busybox
RUN mkdir -p /opt/deep && chown 5:6 /opt/deep && chmod 0750 /opt/deep \\
 && setfattr -n user.note -v kept /opt 2>/dev/null; true
COPY data/ /data/
COPY data /opt/deep/new
COPY data/sub /sub-only/
"""

SCRIPT = """\
import json, sys
from pathlib import Path
from pybuild.api import BuildRequest, Builder
from pybuild.builder.ops import file

if sys.argv[3] == "general":
    async def _never(self, *args, **kwargs):
        return None
    file.FileHandler._context_layer = _never
    calls = None
else:
    calls = []
    real = file.FileHandler._context_layer
    async def _counted(self, *args, **kwargs):
        out = await real(self, *args, **kwargs)
        calls.append(["prewrite" if kwargs.get("record_digests") else "in-step",
                      out is not None])
        return out
    file.FileHandler._context_layer = _counted
builder = Builder(Path(sys.argv[1]))
r = builder.build(BuildRequest(context=sys.argv[2], source_date_epoch=1000, no_cache=True,
                               tags=("ctxlayer:test",)))
manifest = json.loads(builder.root.content.read(r.image.digest))
print(json.dumps({"layers": [x["digest"] for x in manifest["layers"]], "shortcut": calls}))
"""


def _context(base: Path) -> Path:
    ctx = base / "ctx"
    data = ctx / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "empty").mkdir()
    (data / "a.txt").write_text("A")
    (data / "exec.sh").write_text("#!/bin/sh\n")
    (data / "exec.sh").chmod(0o755)
    (data / "sub" / "b.txt").write_text("B" * 100_000)
    (data / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(3 << 20))
    os.link(data / "a.txt", data / "sub" / "a-hardlink.txt")
    os.symlink("../a.txt", data / "sub" / "link")
    (data / "many").mkdir()
    for i in range(100):  # enough files for the first COPY to write its layer before its key
        (data / "many" / f"f{i:03d}").write_text(f"file {i}\n" * i)
    (data / "private").write_text("P")
    (data / "private").chmod(0o600)
    os.setxattr(data / "a.txt", "user.origin", b"context")
    os.chown(data / "a.txt", 4321, 4321)  # context owners never reach the image
    for path in [data, *data.rglob("*")]:
        os.utime(path, (500, 500), follow_symlinks=False)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _build(root: Path, ctx: Path, mode: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(ctx), mode],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture
def work(base_layout: Path) -> object:
    from tests.integration.conftest import _import_base

    base = traversable_dir("pybuild-ctxlayer-")
    _import_base(base / "root", base_layout)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_shortcut_layers_equal_the_general_way(work: Path) -> None:
    ctx = _context(work)
    root = work / "root"
    fast = _build(root, ctx, "shortcut")
    general = _build(root, ctx, "general")
    # All three COPYs create their destination, so all three take the shortcut; the first
    # reads files the stat cache has not seen, so it writes its layer before its key.
    assert fast["shortcut"] == [["prewrite", True], ["in-step", True], ["in-step", True]]
    assert fast["layers"] == general["layers"]
    # And the layer holds what the COPY means: read it back with Python's tarfile.
    blob = root / "content" / "blobs" / "sha256"
    if not blob.is_dir():
        blob = next(root.rglob("blobs/sha256"))
    copy_layer = blob / str(fast["layers"][2]).split(":", 1)[1]  # type: ignore[index]
    with tarfile.open(copy_layer) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        assert members["data"].isdir() and members["data"].mode == 0o755
        a = members["data/a.txt"]
        assert (a.uid, a.gid, a.mode, a.mtime) == (0, 0, 0o644, 500)
        assert a.pax_headers.get("SCHILY.xattr.user.origin") == "context"
        assert members["data/sub/a-hardlink.txt"].islnk()
        assert members["data/sub/a-hardlink.txt"].linkname == "data/a.txt"
        assert members["data/sub/link"].issym()
        assert members["data/private"].mode == 0o600
        assert members["data/exec.sh"].mode == 0o755
        assert members["data/empty"].isdir()
        assert members["data/sub/deeper/c.bin"].size == 3 << 20
        assert members["data"].mtime == 1000  # created now, clamped to the epoch
    deep_layer = blob / str(fast["layers"][3]).split(":", 1)[1]  # type: ignore[index]
    with tarfile.open(deep_layer) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        # The copied-up parents keep their owner and mode.
        assert (members["opt/deep"].uid, members["opt/deep"].gid) == (5, 6)
        assert members["opt/deep"].mode == 0o750
        assert members["opt/deep/new/sub/b.txt"].size == 100_000


REBUILD = """\
import json, sys
from pathlib import Path
from pybuild.api import BuildRequest, Builder
r = Builder(Path(sys.argv[1])).build(BuildRequest(context=sys.argv[2],
                                                   tags=("ctxlayer:rebuild",)))
print(json.dumps({"executed": r.executed, "misses": r.misses}))
"""


def _rebuild(root: Path, ctx: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", REBUILD, str(root), str(ctx)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_prewritten_layer_keeps_the_cache_exact(work: Path) -> None:
    ctx = work / "ctx"
    for i in range(200):
        (ctx / "src" / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (ctx / "src" / f"d{i % 7}" / f"f{i}.txt").write_text(f"{i}\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY src/ /src/\nRUN ls -R /src | wc -l\n")
    root = work / "root"
    first = _rebuild(root, ctx)
    assert len(first["executed"]) == 2  # type: ignore[arg-type]
    # The digests the layer writer recorded make the same files a hit.
    assert _rebuild(root, ctx)["executed"] == []
    # A fresh clone: same content, new inodes and times, so the stat cache knows nothing
    # and the layer is written again before the key; the key still hits.
    clone = work / "clone"
    shutil.copytree(ctx, clone)
    assert _rebuild(root, clone)["executed"] == []
    (ctx / "src" / "d3" / "f10.txt").write_text("changed\n")
    changed = _rebuild(root, ctx)
    assert len(changed["executed"]) == 2  # type: ignore[arg-type]
    reasons = " ".join(changed["misses"].values())  # type: ignore[attr-defined]
    assert "src/d3/f10.txt" in reasons, reasons


def test_cold_context_shows_as_its_own_step(work: Path) -> None:
    from tests.integration.conftest import run_pybuild

    ctx = work / "ctx"
    for i in range(100):
        (ctx / "src").mkdir(parents=True, exist_ok=True)
        (ctx / "src" / f"f{i}").write_text(str(i))
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY src/ /src/\n")

    def started() -> list[str]:
        r = run_pybuild(work / "root", "build", "--progress", "rawjson", str(ctx))
        assert r.code == 0, r.err
        return [e["name"] for e in map(json.loads, r.out.splitlines())
                if e["type"] == "VertexStarted"]

    # Reading a context the stat cache does not know is shown the way BuildKit shows its
    # context transfer; once known, a rebuild shows nothing at all.
    assert started() == ["[internal] load build context", "[2/2] COPY src/ /src/"]
    assert started() == []

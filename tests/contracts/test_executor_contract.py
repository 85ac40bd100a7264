"""The `Executor` contract: the same assertions over the sandbox and the fake.

The sandbox runs these commands for real (busybox sh); the fake is scripted with what
they do (`FAKE_SCRIPTS`), so a solver test written against the fake holds for the
sandbox too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.builder.protocols import (
    CommitSpec,
    ExecStep,
    Executor,
    FileStep,
    LayerBlob,
    MakeDir,
    MakeFile,
    snapshot_name,
)
from pybuild.digest import Digest
from pybuild.errors import IntegrityError
from pybuild.layers.tarwriter import LayerWriter
from tests.support.fake_executor import FakeExecutor
from tests.tooling import require

REPO = Path(__file__).resolve().parents[2]
PATH = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)

# What the contract's commands do, for the fake.
FAKE_SCRIPTS: dict[str, dict[str, object]] = {
    "echo out; echo err >&2": {"output": "out\nerr\n"},
    "exit 3": {"exit_code": 3},
    "echo data > /out": {"files": {"/out": "data\n"}},
}


@dataclass
class Workspace:
    """A build's dirs, every user can traverse them (a root build's steps run as a
    shifted id); the sandbox namespace's root owns those it writes to."""

    root: Path
    snapshots: Path
    work: Path
    blobs: Path

    def blob(self, data: bytes, *, diff_id: Digest | None = None) -> LayerBlob:
        path = self.blobs / Digest.from_bytes(data).hex
        path.write_bytes(data)
        path.chmod(0o644)
        return LayerBlob(path=str(path), digest=Digest.from_bytes(data), size=len(data),
                         diff_id=diff_id or Digest.from_bytes(gzip.decompress(data)))

    def snapshot(self, layer: LayerBlob) -> str:
        return str(self.snapshots / snapshot_name(layer.diff_id))


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    from pybuild.builder.executor.idmap import detect

    base = Path(tempfile.mkdtemp(prefix="pybuild-contract-", dir="/var/tmp"))
    base.chmod(0o755)
    ws = Workspace(root=base, snapshots=base / "snapshots", work=base / "work",
                   blobs=base / "blobs")
    idmap = detect()
    for d in (ws.snapshots, ws.work, ws.blobs):
        d.mkdir()
        if os.geteuid() == 0 and d != ws.blobs:
            os.chown(d, idmap.uid_extents[0].outside, idmap.gid_extents[0].outside)
    yield ws
    # What the sandbox's ids own is removed by the executor; the rest by us.
    shutil.rmtree(base, ignore_errors=True)


def _gzip_tar(build: Callable[[LayerWriter], None]) -> bytes:
    tar = io.BytesIO()
    writer = LayerWriter(tar)
    build(writer)
    writer.close()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(tar.getvalue())
    return out.getvalue()


def small_layer(w: LayerWriter) -> None:
    w.add_dir("a", mode=0o755)
    w.add_bytes("a/b", b"hello\n", mode=0o640)
    w.add_symlink("l", "a/b")


@pytest.fixture(scope="session")
def busybox_blob() -> tuple[bytes, Digest]:
    """The host architecture's busybox layer (blob, diff_id)."""
    from pybuild.testimages.busybox import build_busybox_layout

    layout = build_busybox_layout(REPO / "testdata" / "generated" / "busybox")

    def read(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    index = json.loads((layout / "index.json").read_text())
    inner = json.loads(read(index["manifests"][0]["digest"]))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    desc = next(m for m in inner["manifests"] if m["platform"]["architecture"] == arch)
    manifest = json.loads(read(desc["digest"]))
    config = json.loads(read(manifest["config"]["digest"]))
    return read(manifest["layers"][0]["digest"]), Digest(config["rootfs"]["diff_ids"][0])


Factory = Callable[[Workspace], contextlib.AbstractAsyncContextManager[Executor]]


@contextlib.asynccontextmanager
async def _sandbox(ws: Workspace) -> AsyncIterator[Executor]:
    from pybuild.builder.executor.idmap import detect
    from pybuild.builder.executor.sandbox import SandboxExecutor

    async with SandboxExecutor(detect(), workdir=str(ws.work)) as ex:
        try:
            yield ex
        finally:
            # Snapshots and the scratch dir belong to the namespace's ids.
            await ex.remove([str(p) for p in (*ws.snapshots.iterdir(), *ws.work.iterdir())])


@contextlib.asynccontextmanager
async def _fake(ws: Workspace) -> AsyncIterator[Executor]:
    fake = FakeExecutor()
    for command, behaviour in FAKE_SCRIPTS.items():
        fake.on(command, **behaviour)  # type: ignore[arg-type]
    yield fake


@pytest.fixture(params=["sandbox", "fake"])
def make_executor(request: pytest.FixtureRequest) -> Factory:
    if request.param == "sandbox":
        require("userns")
        if not (shutil.which("crun") or shutil.which("runc")):
            require("crun")
        return _sandbox
    return _fake


def run(scenario: Callable[[Executor], Awaitable[None]], make: Factory,
        ws: Workspace) -> None:
    async def main() -> None:
        async with make(ws) as ex:
            await scenario(ex)

    asyncio.run(main())


async def _with_busybox(ex: Executor, ws: Workspace, blob: tuple[bytes, Digest]) -> str:
    layer = ws.blob(blob[0], diff_id=blob[1])
    await ex.unpack(layer, ws.snapshot(layer))
    return ws.snapshot(layer)


def _step(ws: Workspace, base: str, script: str, name: str, *,
          commit: CommitSpec | None = None) -> ExecStep:
    return ExecStep(step_dir=str(ws.work / name), lowers=(base,), args=("/bin/sh", "-c", script),
                    env=PATH, commit=commit)


# --- the contract ------------------------------------------------------------------------


def test_unpack_makes_a_snapshot_with_the_layers_files(make_executor: Factory,
                                                        workspace: Workspace) -> None:
    layer = workspace.blob(_gzip_tar(small_layer))
    dest = workspace.snapshot(layer)

    async def scenario(ex: Executor) -> None:
        await ex.unpack(layer, dest)
        assert (Path(dest) / "a" / "b").read_bytes() == b"hello\n"
        assert os.readlink(Path(dest) / "l") == "a/b"
        await ex.unpack(layer, dest)  # there already: nothing to do

    run(scenario, make_executor, workspace)


def test_unpack_refuses_content_that_is_not_the_claimed_diff_id(make_executor: Factory,
                                                                 workspace: Workspace) -> None:
    other = Digest.from_bytes(b"someone else's layer")
    layer = workspace.blob(_gzip_tar(small_layer), diff_id=other)
    dest = workspace.snapshot(layer)

    async def scenario(ex: Executor) -> None:
        with pytest.raises(IntegrityError, match=f"claims diff_id {other}"):
            await ex.unpack(layer, dest)
        assert not os.path.exists(dest)
        assert not [p for p in workspace.snapshots.iterdir()]  # no half-made snapshot

    run(scenario, make_executor, workspace)


def test_unpack_refuses_a_blob_that_is_not_its_digest(make_executor: Factory,
                                                       workspace: Workspace) -> None:
    good = workspace.blob(_gzip_tar(small_layer))
    Path(good.path).write_bytes(_gzip_tar(lambda w: w.add_bytes("x", b"evil")))

    async def scenario(ex: Executor) -> None:
        with pytest.raises(IntegrityError):
            await ex.unpack(good, workspace.snapshot(good))
        assert not os.path.exists(workspace.snapshot(good))

    run(scenario, make_executor, workspace)


def test_exec_gives_the_steps_output_and_exit_code(
        make_executor: Factory, workspace: Workspace,
        busybox_blob: tuple[bytes, Digest]) -> None:
    async def scenario(ex: Executor) -> None:
        base = await _with_busybox(ex, workspace, busybox_blob)
        logs: list[str] = []
        outcome = await ex.run(_step(workspace, base, "echo out; echo err >&2", "s1"),
                               on_log=logs.append)
        assert outcome.exit_code == 0 and not outcome.runtime_error
        assert outcome.layer is None  # no commit asked
        assert "".join(logs).splitlines() == ["out", "err"]
        failed = await ex.run(_step(workspace, base, "exit 3", "s2",
                                    commit=CommitSpec(out=str(workspace.work / "never"))),
                              on_log=logs.append)
        assert failed.exit_code == 3 and failed.layer is None
        assert not (workspace.work / "never").exists()

    run(scenario, make_executor, workspace)


def _read_layer(blob: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        return {m.name.rstrip("/"): (tf.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                for m in tf.getmembers()}


def test_commit_gives_a_layer_whose_digests_match_its_blob(
        make_executor: Factory, workspace: Workspace,
        busybox_blob: tuple[bytes, Digest]) -> None:
    async def scenario(ex: Executor) -> None:
        base = await _with_busybox(ex, workspace, busybox_blob)
        out = workspace.work / "layer.tar.gz"
        spec = CommitSpec(out=str(out), compression="gzip",
                          snapshot_dir=str(workspace.snapshots), lowers=(base,))
        outcome = await ex.run(_step(workspace, base, "echo data > /out", "s1", commit=spec),
                               on_log=lambda _: None)
        assert outcome.exit_code == 0 and outcome.layer is not None
        layer = outcome.layer
        blob = out.read_bytes()
        assert Digest.from_bytes(blob) == layer.digest and len(blob) == layer.compressed_size
        tar = gzip.decompress(blob)
        assert Digest.from_bytes(tar) == layer.diff_id and len(tar) == layer.size
        assert not layer.empty
        assert _read_layer(blob)["out"] == b"data\n"
        # The changes are the snapshot of the new layer, for the next step.
        snap = workspace.snapshots / snapshot_name(layer.diff_id)
        assert (snap / "out").read_bytes() == b"data\n"

    run(scenario, make_executor, workspace)


def test_file_actions_and_their_commit(make_executor: Factory, workspace: Workspace,
                                        busybox_blob: tuple[bytes, Digest]) -> None:
    async def scenario(ex: Executor) -> None:
        base = await _with_busybox(ex, workspace, busybox_blob)
        step_dir = str(workspace.work / "f1")
        await ex.apply_files(FileStep(step_dir=step_dir, lowers=(base,), actions=(
            MakeDir(path="/d", mode=0o755), MakeFile(path="/d/f", data=b"x", mode=0o600))))
        out = workspace.work / "f1.tar.gz"
        layer = await ex.commit(step_dir, CommitSpec(out=str(out), compression="gzip",
                                                     lowers=(base,)))
        files = _read_layer(out.read_bytes())
        assert files["d"] is None and files["d/f"] == b"x"
        assert Digest.from_bytes(gzip.decompress(out.read_bytes())) == layer.diff_id

    run(scenario, make_executor, workspace)


def test_remove_removes_what_the_executor_made(make_executor: Factory,
                                               workspace: Workspace) -> None:
    layer = workspace.blob(_gzip_tar(small_layer))
    dest = workspace.snapshot(layer)

    async def scenario(ex: Executor) -> None:
        await ex.unpack(layer, dest)
        await ex.remove([dest, str(workspace.work / "not-there")])
        assert not os.path.exists(dest)

    run(scenario, make_executor, workspace)


def test_probe_path_tells_what_the_lowers_hold(make_executor: Factory,
                                               workspace: Workspace) -> None:
    layer = workspace.blob(_gzip_tar(small_layer))
    dest = workspace.snapshot(layer)

    async def scenario(ex: Executor) -> None:
        assert ex.capabilities.probe_path
        await ex.unpack(layer, dest)
        missing = await ex.probe_path([dest], "/a/new/x")
        assert missing.missing and len(missing.chain) == 1
        assert missing.chain[0].mode & 0o170000 == 0o040000  # /a is a directory
        found = await ex.probe_path([dest], "/a/b")
        assert not found.missing and len(found.chain) == 2
        assert found.chain[1].mode & 0o7777 == 0o640

    run(scenario, make_executor, workspace)


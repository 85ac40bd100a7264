"""Layers in and out of the executor: snapshots unpacked on demand (each once, however many
steps need it at the same time), and committed changes published in the content store."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pybuild.builder.protocols import CommitResult, CommitSpec, Compression, Executor, LayerBlob
from pybuild.builder.result import LayerRef, Solved
from pybuild.content.store import ContentStore


@dataclass(slots=True, kw_only=True)
class Workspace:
    """Where a build's executor works: its scratch dir and the root's snapshots."""

    workdir: Path  # this build's scratch dir (owned by the sandbox namespace)
    snapshots: Path
    compression: Compression = "none"
    source_date_epoch: int | None = None

    def step_dir(self, name: str) -> str:
        return str(self.workdir / f"{name}-{uuid.uuid4().hex[:6]}")

    def scratch_file(self, kind: str, suffix: str = "") -> str:
        return str(self.workdir / f"{kind}-{uuid.uuid4().hex}{suffix}")

    def commit_spec(self, out: str, lowers: list[str]) -> CommitSpec:
        # With the lowers, whiteouts of paths no lower has are dropped.
        return CommitSpec(out=out, compression=self.compression,
                          snapshot_dir=str(self.snapshots), mtime=self.source_date_epoch,
                          lowers=tuple(lowers))


class Layers:
    """`ensure` makes the snapshots of a filesystem; `publish` stores a committed layer."""

    def __init__(self, executor: Executor, store: ContentStore, space: Workspace,
                 parallelism: int) -> None:
        self.executor = executor
        self.store = store
        self.space = space
        self._locks: dict[str, asyncio.Lock] = {}
        self._io = asyncio.Semaphore(max(2, parallelism))

    def snapshot_dir(self, layer: LayerRef) -> str:
        return str(self.space.snapshots / layer.snapshot_name)

    async def ensure(self, solved: Solved) -> list[str]:
        """Unpack missing snapshots; the lowerdirs, top first."""
        layers = solved.real_layers
        await asyncio.gather(*(self._ensure(x) for x in layers))
        return [self.snapshot_dir(x) for x in reversed(layers)]

    async def _ensure(self, layer: LayerRef) -> None:
        path = self.snapshot_dir(layer)
        if os.path.isdir(path):
            return
        lock = self._locks.setdefault(layer.snapshot_name, asyncio.Lock())
        async with lock, self._io:
            blob = LayerBlob(path=str(self.store.blob_path(layer.digest)), digest=layer.digest,
                             size=layer.size, diff_id=layer.diff_id)
            await self.executor.unpack(blob, path)

    async def commit(self, step_dir: str, base: Solved, lowers: list[str]) -> Solved:
        out = self.space.scratch_file("layer")
        res = await self.executor.commit(step_dir, self.space.commit_spec(out, lowers))
        solved, _ = await self.publish(res, out, base)
        return solved

    async def publish(self, res: CommitResult, out: str, base: Solved) -> tuple[Solved, float]:
        """Move a committed layer blob into the content store; base + the layer, and how
        long producing it took (diff and store). A step that changed nothing keeps its
        empty layer, as current BuildKit does (a WORKDIR, a RUN that writes nothing)."""
        start = time.monotonic()
        digest = await asyncio.to_thread(self.store.ingest_file, Path(out), res.digest)
        layer = LayerRef(digest=digest, diff_id=res.diff_id, size=res.compressed_size,
                         media_type=res.media_type)
        seconds = res.seconds + (time.monotonic() - start)
        return Solved(layers=(*base.layers, layer), created=time.time()), seconds

"""What every op handler works with, and the shape of one (BuildKit's `solver.Op`, minus
Acquire: the scheduler owns the semaphores)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from pybuild.builder.cachekey import CacheMap
from pybuild.builder.contexts import Contexts
from pybuild.builder.events import EventSink, Notice
from pybuild.builder.protocols import Executor, SecretProvider, SSHProvider
from pybuild.builder.result import Solved
from pybuild.builder.snapshots import Layers, Workspace
from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import PybuildError, SourceLocation
from pybuild.llb import OpMetadata

OpT = TypeVar("OpT", contravariant=True)


@dataclass(slots=True, kw_only=True)
class OpContext:
    """A build's shared means: the executor and its workspace, the stores, the local files,
    the event sink, the secrets and agents, and the RUN bound."""

    store: ContentStore
    executor: Executor
    space: Workspace
    layers: Layers
    contexts: Contexts
    events: EventSink
    secrets: SecretProvider
    ssh: SSHProvider
    sources_dir: Path  # where ADD downloads and git checkouts are kept ($ROOT/cache)
    cache_mounts: Path  # RUN --mount=type=cache dirs ($ROOT/sandbox/cachemounts)
    run_slots: asyncio.Semaphore  # RUN steps at once
    refresh_downloads: bool = False  # --no-cache: download ADD URLs again
    http_ca_cert: str = ""  # --ca-cert, trusted for ADD https:// too
    network_default: str = "host"
    layer_seconds: dict[str, float] = field(default_factory=dict)  # step -> diff + store

    def notices(self) -> None:
        """Report what the executor has to say (its snapshotter, a runtime fallback)."""
        for notice in self.executor.take_notices():
            self.events(Notice(notice.text, level=notice.level))


class OpHandler(Protocol[OpT]):
    """How one kind of op is cached and run: `cache_map` says what its key is made of
    besides its digest and inputs (local file contents); `execute` makes its result."""

    async def cache_map(self, digest: Digest, op: OpT, inputs: Sequence[Solved]) -> CacheMap:
        ...

    async def execute(self, digest: Digest, op: OpT, name: str, inputs: Sequence[Solved],
                      cmap: CacheMap) -> Solved:
        ...


def located(exc: PybuildError, meta: OpMetadata) -> PybuildError:
    """`exc` reported at the instruction `meta` describes (a copy; an error that has a
    location of its own keeps it)."""
    if exc.location is not None or not meta.filename:
        return exc
    text = meta.text or meta.description.split("] ", 1)[-1]
    out = copy.copy(exc)
    out.location = SourceLocation(meta.filename, meta.start_line, meta.end_line,
                                  instruction=meta.instruction or text.split(" ", 1)[0],
                                  text=text)
    return out

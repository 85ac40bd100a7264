"""The solver: one vertex table for a whole build, every platform and target at once.

Each op digest is one task, shared by every consumer in every definition (BuildKit's
`solver/jobs.go` keeps one active state per vertex digest for all jobs): identical work runs
once, whichever platform or target asks for it; independent branches run concurrently; RUN
steps are bounded by a semaphore. For each op the handler of its kind says what its key is
made of (`CacheMap`); the key is looked up locally, then in the imported caches
(`--cache-from`); a miss runs the op, records its result, and says why it missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybuild.builder.cachekey import (
    CacheKey,
    CacheMap,
    StepId,
    cache_key,
    explain_miss,
    key_parts,
)
from pybuild.builder.events import (
    Notice,
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexMiss,
    VertexStarted,
)
from pybuild.builder.ops.base import OpContext, located
from pybuild.builder.ops.exec import ExecHandler
from pybuild.builder.ops.file import FileHandler
from pybuild.builder.ops.merge import merge
from pybuild.builder.ops.source import REMOTE_PREFIXES, SourceHandler
from pybuild.builder.result import Solved
from pybuild.cache.store import CacheStore
from pybuild.digest import Digest
from pybuild.errors import PybuildError, UserError
from pybuild.llb import Definition, ExecOp, FileOp, Input, MergeOp, Op, OpMetadata, SourceOp

if TYPE_CHECKING:
    from pybuild.builder.remote_cache import ImportedCache


@dataclass(frozen=True, slots=True, kw_only=True)
class SolvePolicy:
    """How the cache is used: `no_cache` (all steps run), the build's SOURCE_DATE_EPOCH
    (part of every committed step's key), the imported caches, and `dockerfile` (its
    absolute path: the scope in which steps are told apart for explanations)."""

    no_cache: bool = False
    source_date_epoch: int | None = None
    imported: ImportedCache | None = None
    dockerfile: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Vertex:
    op: Op
    meta: OpMetadata


class Solver:
    """Solves `definitions` (one per platform or target) together; `solve` gives each one's
    result, in order."""

    def __init__(self, definitions: Sequence[Definition], *, ctx: OpContext,
                 cache: CacheStore, policy: SolvePolicy) -> None:
        self.definitions = list(definitions)
        self.ctx = ctx
        self.cache = cache
        self.policy = policy
        self._vertices: dict[Digest, _Vertex] = {}
        for definition in self.definitions:
            for digest, op in definition.ops.items():
                if digest not in self._vertices:  # the same op: the same vertex
                    self._vertices[digest] = _Vertex(
                        op=op, meta=definition.metadata.get(digest, OpMetadata()))
        ctx.contexts.ops = {d: v.op for d, v in self._vertices.items()}
        self._sources = SourceHandler(ctx)
        self._exec = ExecHandler(ctx)
        self._file = FileHandler(ctx)
        self._tasks: dict[Digest, asyncio.Task[tuple[CacheKey, Solved]]] = {}
        self._group: asyncio.TaskGroup | None = None
        self.executed: list[str] = []
        self.misses: dict[str, str] = {}  # step name -> why it ran
        self.keys: dict[Digest, CacheKey] = {}  # the key of every op solved through the cache

    @property
    def layer_seconds(self) -> dict[str, float]:
        return self.ctx.layer_seconds

    async def solve(self) -> list[Solved]:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                outputs = [self._get(d.output.op) if d.output is not None else None
                           for d in self.definitions]
                results = [await t if t is not None else None for t in outputs]
        except BaseExceptionGroup as failed:
            raise _first(failed) from None
        finally:
            self._group = None
        return [r[1] if r is not None else Solved(layers=()) for r in results]

    def export_keys(self, mode: str) -> list[CacheKey]:
        """The keys `--cache-to` exports: with mode=min those of the steps whose layers are
        in the results (each output's rootfs chain), with max every step's."""
        if mode == "max":
            return list(self.keys.values())
        out: dict[CacheKey, None] = {}
        stack = [d.output.op for d in self.definitions if d.output is not None]
        seen: set[Digest] = set()
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            if digest in self.keys:
                out[self.keys[digest]] = None
            stack.extend(i.op for i in _below(self._vertices[digest].op))
        return list(out)

    # -- the vertex table ---------------------------------------------------------------

    def _get(self, digest: Digest) -> asyncio.Task[tuple[CacheKey, Solved]]:
        task = self._tasks.get(digest)
        if task is None:
            assert self._group is not None
            task = self._group.create_task(self._solve_op(digest))
            self._tasks[digest] = task
        return task

    async def _solve_op(self, digest: Digest) -> tuple[CacheKey, Solved]:
        vertex = self._vertices[digest]
        op, meta = vertex.op, vertex.meta
        name = meta.description or op.kind
        if isinstance(op, SourceOp):
            try:
                return await self._sources.resolve(digest, op, name)
            except PybuildError as exc:
                # (an ADD source carries its instruction's place; a base image, FROM's)
                raise located(exc, meta) from None
        try:
            inputs = list(await asyncio.gather(*(self._get(i.op) for i in op.inputs())))
        except PybuildError as exc:
            # A source fails without a location of its own (a download, a git fetch): it
            # is reported at the instruction that reads it.
            raise located(exc, meta) from None
        if isinstance(op, MergeOp):
            # Nothing to run or to cache: its key and result follow from its inputs.
            return (cache_key(digest, [k for k, _ in inputs], CacheMap(), None),
                    merge([s for _, s in inputs]))
        return await self._cached_or_run(digest, op, meta, name, inputs)

    # -- the cache ------------------------------------------------------------------------

    async def _cached_or_run(self, digest: Digest, op: ExecOp | FileOp,
                             meta: OpMetadata, name: str,
                             inputs: list[tuple[CacheKey, Solved]]) -> tuple[CacheKey, Solved]:
        handler: Any = self._exec if isinstance(op, ExecOp) else self._file
        solved_inputs = [s for _, s in inputs]
        try:
            cmap: CacheMap = await handler.cache_map(digest, op, solved_inputs)
        except PybuildError as exc:
            raise located(exc, meta) from None
        epoch = self.policy.source_date_epoch if handler.commits else None
        input_keys = [k for k, _ in inputs]
        key = cache_key(digest, input_keys, cmap, epoch)
        self.keys[digest] = key
        step = str(self._step_id(meta))
        ignore = self.policy.no_cache or meta.ignore_cache
        hit = None if ignore else await self._lookup(key, name)
        parts = key_parts(op, input_keys, [self._input_label(i) for i in op.inputs()],
                          cmap, epoch)
        if hit is not None:
            solved, imported = hit
            if imported:
                self._record(key, step, parts, name, solved)  # local from now on
            self.ctx.events(VertexCached(digest=str(digest), name=name))
            return key, solved
        reason = ("--no-cache" if ignore else
                  explain_miss(self.cache.latest_for_step(step), parts, meta))
        events = self.ctx.events
        self.misses[name] = reason
        events(VertexMiss(digest=str(digest), name=name, reason=reason))
        events(VertexStarted(digest=str(digest), name=name))
        start = time.monotonic()
        try:
            solved = await handler.execute(digest, op, name, solved_inputs, cmap)
        except PybuildError as exc:
            events(VertexFailed(digest=str(digest), name=name, error=exc.message))
            raise located(exc, meta) from None
        self.executed.append(name)
        self._record(key, step, parts, name, solved)
        events(VertexDone(digest=str(digest), name=name, seconds=time.monotonic() - start))
        return key, solved

    async def _lookup(self, key: CacheKey, name: str) -> tuple[Solved, bool] | None:
        """The result recorded for `key` whose layers the store still has (locally, then
        in the imported caches, whose layers are fetched then), and whether it was
        imported."""
        record = self.cache.get(key)
        if record is not None:
            solved = Solved.from_json(record.result)
            if all(self.ctx.store.has(x.digest) for x in solved.real_layers):
                self.cache.touch(key)
                return solved, False
        imported = self.policy.imported
        found = imported.get(key) if imported is not None else None
        if imported is None or found is None:
            return None
        try:
            await asyncio.to_thread(imported.fetch, self.ctx.store, found)
        except (PybuildError, OSError) as exc:
            why = exc.message if isinstance(exc, PybuildError) else str(exc)
            self.ctx.events(Notice(f"{name}: cached result from {found['source']} unusable "
                                   f"({why}); running the step", level="warning"))
            return None
        return Solved.from_json(found["result"]), True

    def _record(self, key: CacheKey, step: str, parts: dict[str, Any], name: str,
                solved: Solved) -> None:
        self.cache.put(key, step=step, parts=parts, result=solved.to_json(),
                       size=sum(x.size for x in solved.real_layers[-1:]),
                       description=name, created=solved.created)

    def _step_id(self, meta: OpMetadata) -> StepId:
        label = meta.step or meta.description.split("] ", 1)[0]
        return StepId(dockerfile=self.policy.dockerfile or meta.filename, stage=meta.stage,
                      label=label, platform=meta.platform)

    def _input_label(self, inp: Input) -> str:
        """How a miss explanation names an input: the step that made it, or the source."""
        vertex = self._vertices[inp.op]
        op = vertex.op
        if isinstance(op, SourceOp):
            ident = op.identifier
            if ident.startswith(REMOTE_PREFIXES):
                from pybuild.builder.sources import redact

                if ident.startswith("git://"):
                    return f"the git checkout of {redact(dict(op.attrs).get('git.fullurl', ident))}"
                return f"the download {redact(ident)}"
            if ident.startswith("docker-image://"):
                return f"the base image {ident.removeprefix('docker-image://')}"
            return ident
        return vertex.meta.description or "an earlier step"


def _below(op: Op) -> tuple[Input, ...]:
    """The filesystems whose layers an op's result holds: a step's rootfs or base, every
    input of a merge."""
    match op:
        case ExecOp():
            return (op.rootfs,) if op.rootfs is not None else ()
        case FileOp():
            return (op.base,) if op.base is not None else ()
        case MergeOp():
            return op.inputs()
    return ()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a failed build reports: the first that is not a sibling's cancellation."""
    errors = [e for e in _leaves(group) if not isinstance(e, asyncio.CancelledError)]
    ours = [e for e in errors if isinstance(e, PybuildError)]
    # A source's failure comes twice: as its own, and located at the step that reads it.
    for e in (*(e for e in ours if e.location is not None), *ours):
        return e
    if errors:
        return errors[0]
    return asyncio.CancelledError()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


__all__ = ["SolvePolicy", "Solver", "UserError"]

"""A build record as values: what was asked, what each vertex did, how the build ended.

These are what readers get (`history ls/inspect/logs`, the timeline, the OTEL export); the
on-disk form (a header, an append-only event log, a final state) is `store`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

Status = Literal["running", "completed", "failed", "canceled", "killed"]
STATUSES: tuple[Status, ...] = ("running", "completed", "failed", "canceled", "killed")


def _pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in raw or ())


def _strs(raw: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in raw or ())


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSummary:
    """The request as recorded: never a secret value (see `redact`).

    `build_args` holds only the arguments whose values may be kept; the names of the others
    are in `redacted_build_args`. `secrets` and `ssh` are ids only."""

    name: str = ""
    context: str = ""
    dockerfile: str = ""
    target: str = ""
    platforms: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    redacted_build_args: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    ssh: tuple[str, ...] = ()
    named_contexts: tuple[tuple[str, str], ...] = ()
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = ""
    source_date_epoch: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "context": self.context, "dockerfile": self.dockerfile,
            "target": self.target, "platforms": list(self.platforms), "tags": list(self.tags),
            "outputs": list(self.outputs), "build_args": [list(p) for p in self.build_args],
            "redacted_build_args": list(self.redacted_build_args),
            "labels": [list(p) for p in self.labels], "secrets": list(self.secrets),
            "ssh": list(self.ssh), "named_contexts": [list(p) for p in self.named_contexts],
            "cache_from": list(self.cache_from), "cache_to": list(self.cache_to),
            "no_cache": self.no_cache, "no_cache_filter": list(self.no_cache_filter),
            "network": self.network, "source_date_epoch": self.source_date_epoch,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RequestSummary:
        epoch = d.get("source_date_epoch")
        return cls(
            name=str(d.get("name", "")), context=str(d.get("context", "")),
            dockerfile=str(d.get("dockerfile", "")), target=str(d.get("target", "")),
            platforms=_strs(d.get("platforms")), tags=_strs(d.get("tags")),
            outputs=_strs(d.get("outputs")), build_args=_pairs(d.get("build_args")),
            redacted_build_args=_strs(d.get("redacted_build_args")),
            labels=_pairs(d.get("labels")), secrets=_strs(d.get("secrets")),
            ssh=_strs(d.get("ssh")), named_contexts=_pairs(d.get("named_contexts")),
            cache_from=_strs(d.get("cache_from")), cache_to=_strs(d.get("cache_to")),
            no_cache=bool(d.get("no_cache", False)),
            no_cache_filter=_strs(d.get("no_cache_filter")),
            network=str(d.get("network", "")),
            source_date_epoch=int(epoch) if isinstance(epoch, int) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VertexInfo:
    """What the op DAG says of a vertex before it runs (`BuildRecorder.describe_vertices`)."""

    digest: str
    name: str = ""
    kind: str = ""  # source | exec | file | internal
    stage: str = ""
    platform: str = ""
    inputs: tuple[str, ...] = ()  # digests of the vertices it reads
    command: str = ""  # the instruction, without the "[stage 2/4] " progress prefix
    filename: str = ""
    start_line: int = 0
    end_line: int = 0
    source: str = ""  # the instruction's lines as written in the Dockerfile
    silent: bool = False  # reports no progress (the build context source)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": self.digest, "name": self.name, "kind": self.kind,
                               "stage": self.stage, "platform": self.platform,
                               "inputs": list(self.inputs), "command": self.command}
        if self.filename:
            out.update(filename=self.filename, start_line=self.start_line,
                       end_line=self.end_line, source=self.source)
        if self.silent:
            out["silent"] = True
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VertexInfo:
        return cls(digest=str(d["digest"]), name=str(d.get("name", "")),
                   kind=str(d.get("kind", "")), stage=str(d.get("stage", "")),
                   platform=str(d.get("platform", "")), inputs=_strs(d.get("inputs")),
                   command=str(d.get("command", "")), filename=str(d.get("filename", "")),
                   start_line=int(d.get("start_line", 0)), end_line=int(d.get("end_line", 0)),
                   source=str(d.get("source", "")), silent=bool(d.get("silent", False)))


@dataclass(frozen=True, slots=True, kw_only=True)
class VertexRecord:
    """One vertex as it ran. `number` is the `#N` plain progress gave it (first seen, first
    numbered). A cached vertex has `started == completed` (the moment it was found)."""

    number: int
    digest: str
    name: str
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    miss_reason: str = ""
    error: str = ""
    log_chunks: tuple[tuple[float, str], ...] = ()  # (when it arrived, text)
    log_clipped: bool = False
    info: VertexInfo | None = None

    @property
    def log(self) -> str:
        return "".join(text for _, text in self.log_chunks)

    @property
    def state(self) -> str:
        """cached | done | failed | running (no end: still running, or the build died)."""
        if self.error:
            return "failed"
        if self.cached:
            return "cached"
        return "done" if self.completed is not None else "running"

    @property
    def duration(self) -> float:
        if self.started is None or self.completed is None:
            return 0.0
        return max(0.0, self.completed - self.started)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    message: str
    code: str = ""
    exit_code: int = 0  # of the failed step, when a RUN step failed
    filename: str = ""
    start_line: int = 0
    end_line: int = 0
    instruction: str = ""
    hint: str = ""
    vertex: str = ""  # digest of the vertex that failed, when one did

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code, "exit_code": self.exit_code,
                "filename": self.filename, "start_line": self.start_line,
                "end_line": self.end_line, "instruction": self.instruction,
                "hint": self.hint, "vertex": self.vertex}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ErrorInfo:
        return cls(message=str(d.get("message", "")), code=str(d.get("code", "")),
                   exit_code=int(d.get("exit_code", 0)), filename=str(d.get("filename", "")),
                   start_line=int(d.get("start_line", 0)), end_line=int(d.get("end_line", 0)),
                   instruction=str(d.get("instruction", "")), hint=str(d.get("hint", "")),
                   vertex=str(d.get("vertex", "")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    time: float
    text: str
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRecord:
    ref: str
    created: float
    status: Status
    request: RequestSummary
    completed: float | None = None  # None: running, or killed (then `last_event` is the end)
    last_event: float | None = None
    vertices: tuple[VertexRecord, ...] = ()
    notices: tuple[Notice, ...] = ()
    warnings: tuple[str, ...] = ()
    error: ErrorInfo | None = None
    outputs: tuple[tuple[str, str], ...] = ()  # e.g. ("containerimage.digest", "sha256:…")
    described: tuple[VertexInfo, ...] = ()  # every vertex of the DAG, run or not
    pid: int = 0
    log_limit: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def end(self) -> float:
        """When the build ended (or its last sign of life, for a running or killed one)."""
        if self.completed is not None:
            return self.completed
        times: list[float] = [self.created]
        times += [t for v in self.vertices for t in (v.started, v.completed) if t is not None]
        if self.last_event is not None:
            times.append(self.last_event)
        return max(times)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.created)

    @property
    def total_steps(self) -> int:
        seen = {v.digest for v in self.vertices}
        return len(seen | {i.digest for i in self.described if not i.silent})

    @property
    def completed_steps(self) -> int:
        return len({v.digest for v in self.vertices if v.state in ("done", "cached")})

    @property
    def cached_steps(self) -> int:
        return len({v.digest for v in self.vertices if v.state == "cached"})

    def vertex(self, number: int) -> VertexRecord | None:
        for v in self.vertices:
            if v.number == number:
                return v
        return None

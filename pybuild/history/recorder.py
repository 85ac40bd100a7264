"""BuildRecorder: an EventSink that makes a build's durable record as the build runs.

The build calls, in order:
    recorder = BuildRecorder(stores.roots.root, options)
    recorder.start(summary, redact_args=..., secret_values=...)
    ...solve with events=tee(progress, recorder); recorder.describe_vertices(definition, ...)
    recorder.finish(outputs=..., warnings=...)       # or finish(error=exc)
Every event is stamped on arrival and appended to the record at once (one write each), so
a build killed at any point leaves a record that says how far it got. Recording never
fails the build: a history write error disables the recorder and is kept in `problems`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild.builder.events import (
    Event,
    EventSink,
    Notice,
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexLog,
    VertexMiss,
    VertexStarted,
)
from pybuild.history import store
from pybuild.history.logcap import DEFAULT_STEP_LOG_LIMIT, StepLog, format_limit
from pybuild.history.model import SCHEMA_VERSION, BuildRecord, RequestSummary, VertexInfo
from pybuild.history.redact import Redactor, StreamScrubber, split_build_args

if TYPE_CHECKING:
    from pybuild.history.otel import OtelSettings
    from pybuild.llb import Definition

DEFAULT_MAX_RECORDS = 50  # BuildKit's history.maxEntries
DEFAULT_MAX_AGE = 48 * 3600.0  # BuildKit's history.maxAge
DEFAULT_RECORD_LOG_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryOptions:
    """How records are kept. `step_log_limit`/`record_log_limit`: bytes of output kept per
    step / per build (-1: no limit); `max_records`, `max_age` (seconds; 0: none): what
    stays when a new build starts. `otel`: where to send the build's trace, if anywhere."""

    enabled: bool = True
    step_log_limit: int = DEFAULT_STEP_LOG_LIMIT
    record_log_limit: int = DEFAULT_RECORD_LOG_LIMIT
    max_records: int = DEFAULT_MAX_RECORDS
    max_age: float = DEFAULT_MAX_AGE
    otel: OtelSettings | None = None
    redact_build_args: tuple[str, ...] = ()  # build args whose values are never recorded

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> HistoryOptions:
        """The options the environment sets (read at the edge, the CLI or the API):
        PYBUILD_STEP_LOG_MAX_SIZE (as BuildKit's BUILDKIT_STEP_LOG_MAX_SIZE),
        PYBUILD_HISTORY_MAX_RECORDS, PYBUILD_HISTORY_MAX_AGE (seconds), PYBUILD_HISTORY=0
        (no records), and OTEL_EXPORTER_OTLP_* (see `otel.OtelSettings.from_environ`)."""
        from pybuild.errors import UserError

        def number(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise UserError(f"{name}={raw!r}: expected a whole number") from None

        otel = None
        if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            from pybuild.history.otel import OtelSettings

            otel = OtelSettings.from_environ(environ)
        flag = environ.get("PYBUILD_HISTORY", "").strip().lower()
        if flag not in ("", "0", "1", "false", "true"):
            raise UserError(f"PYBUILD_HISTORY={flag!r}: expected 0 or 1")
        return cls(enabled=flag not in ("0", "false"),
                   step_log_limit=number("PYBUILD_STEP_LOG_MAX_SIZE", DEFAULT_STEP_LOG_LIMIT),
                   max_records=number("PYBUILD_HISTORY_MAX_RECORDS", DEFAULT_MAX_RECORDS),
                   max_age=float(number("PYBUILD_HISTORY_MAX_AGE", int(DEFAULT_MAX_AGE))),
                   otel=otel)


def tee(*sinks: EventSink) -> EventSink:
    """One sink that passes each event to all of `sinks`, in order."""
    def sink(event: Event) -> None:
        for s in sinks:
            s(event)
    return sink


@dataclass(slots=True)
class _Step:
    log: StepLog
    scrub: StreamScrubber
    clipped: bool = False
    ended: bool = False


@dataclass(slots=True)
class _Counts:
    seen: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    cached: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    described: set[str] = field(default_factory=set)


class BuildRecorder:
    """See the module docstring. Use it once, for one build."""

    def __init__(self, root: Path, options: HistoryOptions | None = None,
                 *, clock: Any = time.time) -> None:
        self.root = Path(root)
        self.options = options or HistoryOptions()
        self.clock = clock
        self.ref = store.new_ref()
        self.dir: Path | None = None
        self.problems: list[str] = []  # what went wrong with the record itself (not the build)
        self._fd = -1
        self._lock_fd = -1
        self._redact = Redactor()
        self._steps: dict[str, _Step] = {}
        self._names: dict[str, str] = {}
        self._counts = _Counts()
        self._log_bytes = 0
        self._record_clipped = False
        self._finished = False
        self._active = False

    # -- the build calls these ----------------------------------------------------------

    def start(self, summary: RequestSummary, *, redact_args: Iterable[str] = (),
              secret_values: Iterable[str] = ()) -> str:
        """Opens the record; returns its ref. `redact_args`: build-argument names whose
        values must not be kept (besides those that look secret); `secret_values`: values
        to mask wherever they appear (`redact.read_secret_values` reads `--secret`s)."""
        kept, dropped, values = split_build_args(summary.build_args, redact_args)
        self._redact = Redactor([*secret_values, *values])
        r = self._redact
        clean = RequestSummary(
            name=r(summary.name), context=r(summary.context), dockerfile=r(summary.dockerfile),
            target=r(summary.target), platforms=summary.platforms,
            tags=tuple(r(t) for t in summary.tags),
            outputs=tuple(r(o) for o in summary.outputs),
            build_args=tuple((k, r(v)) for k, v in kept),
            redacted_build_args=tuple(dict.fromkeys((*summary.redacted_build_args,
                                                     *dropped))),
            labels=tuple((k, r(v)) for k, v in summary.labels),
            secrets=summary.secrets, ssh=summary.ssh,
            named_contexts=tuple((k, r(v)) for k, v in summary.named_contexts),
            cache_from=tuple(r(c) for c in summary.cache_from),
            cache_to=tuple(r(c) for c in summary.cache_to), no_cache=summary.no_cache,
            no_cache_filter=summary.no_cache_filter, network=summary.network,
            source_date_epoch=summary.source_date_epoch)
        self.summary = clean
        self.created = self.clock()
        if not self.options.enabled:
            return self.ref
        try:
            self._open(clean)
        except OSError as exc:
            self._broken(exc)
        else:
            self._active = True
            self._trim()
        return self.ref

    def __call__(self, event: Event) -> None:
        if self._finished:
            return
        t = getattr(event, "time", None)
        now = float(t) if isinstance(t, int | float) else self.clock()
        match event:
            case VertexLog():
                self._log(event.digest, event.data, now)
            case VertexStarted():
                self._counts.seen.add(event.digest)
                self._append({"t": now, "e": "started", "d": event.digest,
                              "n": self._name(event.digest, event.name)})
            case VertexCached():
                c = self._counts
                c.seen.add(event.digest)
                if event.digest not in c.done:
                    c.cached.add(event.digest)
                self._append({"t": now, "e": "cached", "d": event.digest,
                              "n": self._name(event.digest, event.name)})
            case VertexMiss():
                self._counts.seen.add(event.digest)
                self._append({"t": now, "e": "miss", "d": event.digest,
                              "n": self._name(event.digest, event.name),
                              "r": self._redact(event.reason)})
            case VertexDone():
                self._end_step(event.digest, now)
                self._counts.done.add(event.digest)
                self._counts.cached.discard(event.digest)
                self._append({"t": now, "e": "done", "d": event.digest,
                              "n": self._name(event.digest, event.name),
                              "s": round(float(event.seconds), 6)})
            case VertexFailed():
                self._end_step(event.digest, now)
                error = self._redact(event.error)
                self._counts.failed[event.digest] = error
                self._append({"t": now, "e": "failed", "d": event.digest,
                              "n": self._name(event.digest, event.name), "x": error})
            case Notice():
                self._append({"t": now, "e": "notice", "x": self._redact(event.text),
                              "l": event.level})

    def describe_vertices(self, definition: Definition, *, platform: str = "",
                          dockerfile: bytes | str | None = None) -> None:
        """Registers the static facts of every vertex of `definition` (one call per
        platform): names, stages, inputs (for the critical path), the instruction and,
        given the Dockerfile's text, its source lines."""
        from pybuild.history.describe import describe

        infos = describe(definition, platform=platform, dockerfile=dockerfile,
                         redact=self._redact)
        for info in infos:
            self._counts.described.add(info.digest)
            if info.silent:
                self._counts.silent.add(info.digest)
        self._append({"t": self.clock(), "e": "describe",
                      "v": [i.to_json() for i in infos]})

    def add_vertices(self, infos: Sequence[VertexInfo]) -> None:
        """Like `describe_vertices`, for vertices described some other way."""
        r = self._redact
        clean = [VertexInfo(digest=i.digest, name=r(i.name), kind=i.kind, stage=i.stage,
                            platform=i.platform, inputs=i.inputs, command=r(i.command),
                            filename=i.filename, start_line=i.start_line,
                            end_line=i.end_line, source=r(i.source), silent=i.silent)
                 for i in infos]
        for info in clean:
            self._counts.described.add(info.digest)
            if info.silent:
                self._counts.silent.add(info.digest)
        self._append({"t": self.clock(), "e": "describe", "v": [i.to_json() for i in clean]})

    def finish(self, *, outputs: Mapping[str, str] | None = None,
               error: BaseException | None = None,
               warnings: Sequence[str] = ()) -> BuildRecord | None:
        """Writes how the build ended and releases the record; returns the record (None
        when recording is off or broke). Exports the trace when OTEL is configured."""
        if self._finished:
            return None
        for digest in list(self._steps):
            self._end_step(digest, self.clock())
        self._finished = True
        completed = self.clock()
        status = "completed" if error is None else ("canceled" if _is_cancel(error)
                                                    else "failed")
        final: dict[str, Any] = {
            "status": status, "completed": completed,
            "outputs": {k: self._redact(v) for k, v in (outputs or {}).items()},
            "warnings": [self._redact(w) for w in warnings],
            "steps": list(self._steps_counts()),
        }
        if error is not None and status == "failed":
            final["error"] = self._error(error)
        record = None
        if self._active and self.dir is not None:
            try:
                store.write_atomic(self.dir / store.FINAL, store.dumps(final))
            except OSError as exc:
                self._broken(exc)
            with contextlib.suppress(OSError):
                record = store.load(self.dir)
        self._close()
        if record is not None and self.options.otel is not None:
            from pybuild.history.otel import export_trace

            problem = export_trace(record, self.options.otel)
            if problem:
                self.problems.append(problem)
        return record

    def __enter__(self) -> BuildRecorder:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if not self._finished:
            self.finish(error=exc)

    # -- internals ----------------------------------------------------------------------

    def _open(self, summary: RequestSummary) -> None:
        base = store.history_root(self.root)
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".tmp-{self.ref}"
        tmp.mkdir(mode=0o700)
        self._lock_fd = os.open(tmp / store.LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        header = {"schema": SCHEMA_VERSION, "ref": self.ref, "created": self.created,
                  "pid": os.getpid(), "request": summary.to_json(),
                  "log_limit": self.options.step_log_limit}
        store.write_atomic(tmp / store.HEADER, store.dumps(header))
        self._fd = os.open(tmp / store.EVENTS,
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        final = base / self.ref
        os.rename(tmp, final)
        self.dir = final

    def _trim(self) -> None:
        """Keeps the history bounded: the oldest records beyond `max_records`, and those
        older than `max_age`, go when a build starts."""
        o = self.options
        try:
            store.trim(self.root, keep=o.max_records if o.max_records > 0 else None,
                       max_age=o.max_age if o.max_age > 0 else None, now=self.clock())
        except OSError as exc:
            self.problems.append(f"build history: could not remove old records: {exc}")

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, store.dumps(entry) + b"\n")
        except OSError as exc:
            self._broken(exc)

    def _name(self, digest: str, name: str) -> str:
        clean = self._names.get(name)
        if clean is None:
            clean = self._names[name] = self._redact(name)
        return clean

    def _step(self, digest: str) -> _Step:
        step = self._steps.get(digest)
        if step is None:
            step = self._steps[digest] = _Step(StepLog(self.options.step_log_limit),
                                               StreamScrubber(self._redact))
        return step

    def _log(self, digest: str, data: str, now: float) -> None:
        step = self._step(digest)
        self._write_log(digest, step, step.log.feed(step.scrub.feed(data)), now)

    def _write_log(self, digest: str, step: _Step, text: str, now: float) -> None:
        if not text or self._record_clipped:
            return
        limit = self.options.record_log_limit
        size = len(text.encode("utf-8", "replace"))
        entry: dict[str, Any] = {"t": now, "e": "log", "d": digest}
        if limit >= 0 and self._log_bytes + size > limit:
            room = max(0, limit - self._log_bytes)
            text = (text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                    + f"\n[output clipped, build log limit {format_limit(limit)} reached]\n")
            self._record_clipped = True
            entry["clip"] = True
        elif step.log.clipped and not step.clipped:
            step.clipped = True
            entry["clip"] = True
        self._log_bytes += size
        entry["x"] = text
        self._append(entry)

    def _end_step(self, digest: str, now: float) -> None:
        step = self._steps.pop(digest, None)
        if step is None:
            return
        rest = step.scrub.flush()
        if rest:
            self._write_log(digest, step, step.log.feed(rest), now)
        tail = step.log.flush()
        if tail:
            self._write_log(digest, step, tail, now)

    def _steps_counts(self) -> tuple[int, int, int]:
        c = self._counts
        total = len(c.seen | (c.described - c.silent))
        return len(c.done | c.cached), total, len(c.cached)

    def _error(self, error: BaseException) -> dict[str, Any]:
        from pybuild.errors import PybuildError, StepFailedError

        r = self._redact
        if isinstance(error, PybuildError):
            loc = error.location
            return {
                "message": r(error.message), "code": error.code,
                "exit_code": error.step_exit_code if isinstance(error, StepFailedError)
                else 0,
                "filename": loc.filename if loc else "", "start_line": loc.start_line
                if loc else 0, "end_line": loc.end_line if loc else 0,
                "instruction": loc.instruction if loc else "",
                "hint": r(error.hint or ""),
                "vertex": next(iter(self._counts.failed), ""),
            }
        return {"message": r(f"{type(error).__name__}: {error}"), "code": "internal",
                "vertex": next(iter(self._counts.failed), "")}

    def _broken(self, exc: OSError) -> None:
        self.problems.append(f"build history: recording stopped: {exc.strerror or exc}")
        self._close()

    def _close(self) -> None:
        for attr in ("_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)


def _is_cancel(error: BaseException) -> bool:
    if isinstance(error, KeyboardInterrupt):
        return True
    asyncio = sys.modules.get("asyncio")  # (imported by every build that could be canceled)
    return asyncio is not None and isinstance(error, asyncio.CancelledError)


__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_RECORDS", "BuildRecorder", "HistoryOptions", "tee"]

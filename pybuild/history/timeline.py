"""What the timeline picture shows, computed once for the HTML and the SVG renderings:
bars on a time axis grouped by stage and platform, the critical path, parallelism."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from pybuild.history.model import BuildRecord, VertexInfo, VertexRecord

LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 6000
_PREFIX = re.compile(r"^\[(?:(?P<platform>[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9.]+)?) )?"
                     r"(?:(?P<stage>[^\]\s]+) )?\d+/\d+\] ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    index: int
    stage: str
    platform: str

    @property
    def label(self) -> str:
        stage = self.stage or "internal"
        return f"{stage} · {self.platform}" if self.platform else stage


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    number: int
    digest: str
    name: str
    command: str
    group: int
    start: float  # seconds since the build started
    end: float
    state: str  # done | cached | failed | running
    critical: bool
    miss_reason: str
    error: str
    log_tail: str
    log_clipped: bool
    source: str
    location: str  # "Dockerfile:3-4"
    inputs: tuple[int, ...]  # numbers of the bars this one waited for

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    record: BuildRecord
    duration: float
    groups: tuple[Group, ...]
    bars: tuple[Bar, ...]  # by group, then start
    critical: tuple[int, ...]  # bar numbers, first to last
    critical_seconds: float  # time spent running the critical path's steps
    parallelism: tuple[tuple[float, int], ...]  # (t, running steps from t on)
    max_parallelism: int
    ticks: tuple[float, ...]

    @property
    def started_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.record.created))


def _tail(log: str) -> str:
    lines = log.splitlines()[-LOG_TAIL_LINES:]
    text = "\n".join(lines)
    return text[-LOG_TAIL_CHARS:]


def nice_ticks(duration: float, target: int = 10) -> tuple[float, ...]:
    """Round tick positions from 0 to at least `duration`, about `target` of them."""
    span = max(duration, 0.001)
    steps = sorted([m * 10.0 ** e for e in range(-3, 6) for m in (1, 2, 5)]
                   + [60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0])
    step = next((c for c in steps if span / c <= target), steps[-1])
    return tuple(round(i * step, 6) for i in range(math.ceil(span / step - 1e-9) + 1))


def _stage_platform(v: VertexRecord) -> tuple[str, str]:
    info = v.info
    if info is not None and (info.stage or info.platform):
        return info.stage, info.platform
    m = _PREFIX.match(v.name)
    if m:
        return m.group("stage") or "", m.group("platform") or ""
    return "", info.platform if info is not None else ""


def _deps(record: BuildRecord) -> dict[str, list[str]]:
    """For each recorded vertex, the recorded vertices it read (through vertices that
    report nothing, such as the build context source)."""
    recorded = {v.digest for v in record.vertices}
    described: dict[str, VertexInfo] = {i.digest: i for i in record.described}
    extra: dict[str, list[str]] = {}
    for v in record.vertices:
        if v.digest.startswith("context:"):  # the context upload made for a COPY
            extra.setdefault(v.digest.partition(":")[2], []).append(v.digest)
    out: dict[str, list[str]] = {}
    for d in recorded:
        info = described.get(d)
        stack = list(info.inputs if info is not None else ()) + extra.get(d, [])
        seen: set[str] = set()
        found: list[str] = []
        while stack:
            x = stack.pop()
            if x in seen or x == d:
                continue
            seen.add(x)
            if x in recorded:
                found.append(x)
            elif x in described:
                stack.extend(described[x].inputs)
        out[d] = found
    return out


def critical_path(record: BuildRecord, end_of: dict[str, float],
                  start_of: dict[str, float]) -> list[str]:
    """The chain of vertices that decided when the build ended: from the last vertex to
    finish, back through the input each one waited for longest (the last to finish).
    Without DAG facts (no `describe_vertices`), the vertex that ended last before each
    one started stands in for its input."""
    if not record.vertices:
        return []
    deps = _deps(record)
    known = any(deps.values())
    sink = max(record.vertices, key=lambda v: (end_of[v.digest], v.duration, -v.number))
    path = [sink.digest]
    seen = {sink.digest}
    cur = sink.digest
    while True:
        if known:
            candidates = [d for d in deps.get(cur, []) if d not in seen]
        else:
            limit = start_of[cur] + 1e-6
            candidates = [v.digest for v in record.vertices
                          if v.digest not in seen and end_of[v.digest] <= limit]
        if not candidates:
            break
        cur = max(candidates, key=lambda d: (end_of[d], end_of[d] - start_of[d]))
        seen.add(cur)
        path.append(cur)
    path.reverse()
    return path


def build_timeline(record: BuildRecord) -> Timeline:
    t0 = record.created
    record_end = record.end
    start_of: dict[str, float] = {}
    end_of: dict[str, float] = {}
    for v in record.vertices:
        s = v.started if v.started is not None else (v.completed or record_end)
        e = v.completed if v.completed is not None else record_end
        start_of[v.digest], end_of[v.digest] = s - t0, max(e, s) - t0
    critical = critical_path(record, end_of, start_of)
    on_path = set(critical)
    deps = _deps(record)
    number_of = {v.digest: v.number for v in record.vertices}

    groups: dict[tuple[str, str], Group] = {}
    placed: list[tuple[int, float, int, VertexRecord]] = []
    firsts: dict[tuple[str, str], float] = {}
    for v in record.vertices:
        key = _stage_platform(v)
        firsts[key] = min(firsts.get(key, start_of[v.digest]), start_of[v.digest])
    for i, key in enumerate(sorted(firsts, key=lambda k: (firsts[k], k))):
        groups[key] = Group(index=i, stage=key[0], platform=key[1])
    for v in record.vertices:
        g = groups[_stage_platform(v)]
        placed.append((g.index, start_of[v.digest], v.number, v))
    placed.sort(key=lambda p: (p[0], p[1], p[2]))

    bars = []
    for gi, start, _, v in placed:
        info = v.info if v.info is not None and v.info.digest == v.digest else None
        location = ""
        if info is not None and info.filename:
            location = f"{info.filename}:{info.start_line}"
            if info.end_line > info.start_line:
                location += f"-{info.end_line}"
        bars.append(Bar(
            number=v.number, digest=v.digest, name=v.name,
            command=info.command if info is not None and info.command else v.name,
            group=gi, start=start, end=end_of[v.digest], state=v.state,
            critical=v.digest in on_path, miss_reason=v.miss_reason, error=v.error,
            log_tail=_tail(v.log), log_clipped=v.log_clipped,
            source=info.source if info is not None else "", location=location,
            inputs=tuple(sorted(number_of[d] for d in deps.get(v.digest, [])))))

    changes: list[tuple[float, int]] = []
    for v in record.vertices:
        if v.state != "cached" and end_of[v.digest] > start_of[v.digest]:
            changes += [(start_of[v.digest], 1), (end_of[v.digest], -1)]
    changes.sort()
    series: list[tuple[float, int]] = [(0.0, 0)]
    running = peak = 0
    for t, delta in changes:
        running += delta
        peak = max(peak, running)
        if series and abs(series[-1][0] - t) < 1e-9:
            series[-1] = (t, running)
        else:
            series.append((t, running))
    duration = max(record.duration, max(end_of.values(), default=0.0))
    critical_seconds = sum(end_of[d] - start_of[d] for d in critical)
    return Timeline(
        record=record, duration=duration, groups=tuple(groups.values()), bars=tuple(bars),
        critical=tuple(number_of[d] for d in critical), critical_seconds=critical_seconds,
        parallelism=tuple(series), max_parallelism=peak, ticks=nice_ticks(duration))


def format_seconds(s: float) -> str:
    if s < 0.001:
        return "0s"
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    return f"{int(s // 60)}m {int(s % 60):02d}s"

"""`pybuild history` output as text (the CLI prints it): the list, the summary of one
record as `buildx history inspect` shows it (plus why each step missed the cache), and
the logs as plain progress prints them."""

from __future__ import annotations

import time
from typing import Any

from pybuild.history.model import BuildRecord, VertexRecord
from pybuild.history.store import RecordHead, load

_LS_STATUS = {"completed": "Completed", "failed": "Error", "canceled": "Canceled",
              "running": "Running", "killed": "Killed"}
ERROR_LOG_LINES = 16  # buildx shows the failed step's last 16 lines


def format_duration(seconds: float) -> str:
    """buildx's formatDuration: 1.2s under a minute, else "3m 4s"."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m {int(seconds % 60):2d}s"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, as `CREATED AT` shows ages in docker commands."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _trim_beginning(s: str, n: int) -> str:
    return s if len(s) <= n else ".." + s[len(s) - n + 2:]


def _steps(h: RecordHead) -> tuple[int, int, int]:
    if h.steps is not None:
        return h.steps
    try:
        r = load(h.path)
    except Exception:  # a record being removed meanwhile: show what the head says
        return (0, 0, 0)
    return r.completed_steps, r.total_steps, r.cached_steps


def _rfc3339(ts: float) -> str:
    frac = f"{ts % 1:.9f}"[1:].rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + frac + "Z"


def ls_json(h: RecordHead) -> dict[str, Any]:
    """One record as `buildx history ls --format json` prints it (plus pybuild's own
    status word: killed)."""
    done, total, cached = _steps(h)
    out: dict[str, Any] = {"ref": h.ref, "name": h.request.name, "status":
                           _LS_STATUS[h.status], "created_at": _rfc3339(h.created),
                           "total_steps": total, "completed_steps": done,
                           "cached_steps": cached}
    if h.completed is not None:
        out["completed_at"] = _rfc3339(h.completed)
    return out


def ls_table(records: list[RecordHead], *, now: float, no_trunc: bool = False) -> str:
    rows = [("BUILD ID", "NAME", "STATUS", "CREATED AT", "DURATION", "CACHED/TOTAL")]
    for h in records:
        _, total, cached = _steps(h)
        name = h.request.name if no_trunc else _trim_beginning(h.request.name, 36)
        duration = format_duration(h.end - h.created) if h.status != "running" else \
            format_duration(now - h.created) + "+"
        rows.append((h.ref, name, _LS_STATUS[h.status],
                     human_duration(now - h.created) + " ago", duration, f"{cached}/{total}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                   + "\n" for r in rows)


def _table(pairs: list[tuple[str, str]], title: str) -> list[str]:
    if not pairs:
        return []
    width = max(len(title), *(len(k) for k, _ in pairs))
    lines = [f"{title.upper():<{width}}  VALUE"]
    lines += [f"{k:<{width}}  {v}" for k, v in pairs]
    return [*lines, ""]


def _kv(pairs: list[tuple[str, str]]) -> list[str]:
    pairs = [(k, v) for k, v in pairs if v]
    if not pairs:
        return []
    width = max(len(k) for k, _ in pairs) + 2
    return [f"{k + ':':<{width}}{v}" for k, v in pairs]


def inspect_json(r: BuildRecord) -> dict[str, Any]:
    q = r.request
    return {
        "Name": q.name, "Ref": r.ref, "Context": q.context, "Dockerfile": q.dockerfile,
        "Target": q.target, "Platform": list(q.platforms),
        "NamedContexts": [{"Name": k, "Value": v} for k, v in q.named_contexts],
        "StartedAt": _rfc3339(r.created),
        "CompletedAt": _rfc3339(r.completed) if r.completed is not None else None,
        "Duration": round(r.duration, 6), "Status": r.status,
        "Error": r.error.to_json() if r.error else None,
        "NumCompletedSteps": r.completed_steps, "NumTotalSteps": r.total_steps,
        "NumCachedSteps": r.cached_steps,
        "BuildArgs": [{"Name": k, "Value": v} for k, v in q.build_args],
        "RedactedBuildArgs": list(q.redacted_build_args),
        "Labels": [{"Name": k, "Value": v} for k, v in q.labels],
        "Config": {"Network": q.network, "NoCache": q.no_cache,
                   "NoCacheFilter": list(q.no_cache_filter),
                   "SourceDateEpoch": q.source_date_epoch, "Tags": list(q.tags),
                   "Outputs": list(q.outputs), "CacheFrom": list(q.cache_from),
                   "CacheTo": list(q.cache_to), "Secrets": list(q.secrets), "SSH": list(q.ssh)},
        "Outputs": dict(r.outputs), "Warnings": list(r.warnings),
        "Steps": [{"Number": v.number, "Name": v.name, "Digest": v.digest, "Status": v.state,
                   "Duration": round(v.duration, 6), "MissReason": v.miss_reason,
                   "Error": v.error} for v in r.vertices],
    }


def inspect_text(r: BuildRecord, *, ref_given: bool = True) -> str:
    """The summary `buildx history inspect` prints, and why each step ran."""
    q = r.request
    out: list[str] = []
    out += _kv([("Name", q.name), ("Ref", "" if ref_given else r.ref),
                ("Context", q.context), ("Dockerfile", q.dockerfile), ("Target", q.target),
                ("Platforms", ", ".join(q.platforms))])
    out.append("")
    out += _table(list(q.named_contexts), "Named Context")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created))
    status_lines = [("Started", started),
                    ("Duration", format_duration(r.duration)
                     + (" (running)" if r.status == "running" else ""))]
    if r.status == "failed":
        e = r.error
        status_lines.append(("Error", f"{e.code} {e.message}" if e and e.code else
                             (e.message if e else "failed")))
    elif r.status == "canceled":
        status_lines.append(("Status", "Canceled"))
    elif r.status == "killed":
        status_lines.append(("Status", "Killed (the build stopped without finishing its "
                                       "record; it shows what happened until then)"))
    total = r.total_steps
    pct = (100.0 * r.cached_steps / total) if total else 0.0
    status_lines.append(("Build Steps", f"{r.completed_steps}/{total} ({pct:.0f}% cached)"))
    out += _kv(status_lines)
    out.append("")
    config = _kv([("Network", q.network if q.network not in ("", "default") else ""),
                  ("No Cache", "true" if q.no_cache else ""),
                  ("No Cache Filter", ", ".join(q.no_cache_filter)),
                  ("Source Date Epoch", "" if q.source_date_epoch is None
                   else str(q.source_date_epoch)),
                  ("Tags", ", ".join(q.tags)), ("Outputs", ", ".join(q.outputs)),
                  ("Cache From", ", ".join(q.cache_from)), ("Cache To", ", ".join(q.cache_to)),
                  ("Secrets", ", ".join(q.secrets)), ("SSH", ", ".join(q.ssh))])
    if config:
        out += [*config, ""]
    args = list(q.build_args) + [(k, "(not recorded: secret)") for k in q.redacted_build_args]
    out += _table(args, "Build Arg")
    out += _table(list(q.labels), "Label")
    if r.outputs:
        out += [*_kv(list(r.outputs)), ""]
    ran = [v for v in r.vertices if v.state != "cached" and (v.miss_reason or v.error)]
    if ran:
        out.append("Steps that ran (why they were not cached):")
        for v in ran:
            why = v.miss_reason or "-"
            took = format_duration(v.duration) if v.completed is not None else "unfinished"
            out.append(f"  #{v.number:<3} {took:>7}  {v.name}")
            out.append(f"        {why}")
        out.append("")
    if r.warnings:
        out.append("Warnings:")
        out += [f"  {w}" for w in r.warnings]
        out.append("")
    if r.error is not None:
        out += _error_section(r)
    out.append(f"Print build logs: pybuild history logs {r.ref}")
    out.append(f"Draw the timeline: pybuild history open {r.ref}")
    return "\n".join(out) + "\n"


def _error_section(r: BuildRecord) -> list[str]:
    e = r.error
    assert e is not None
    out: list[str] = []
    failed = next((v for v in r.vertices if v.digest == e.vertex), None) or next(
        (v for v in r.vertices if v.error), None)
    if e.filename:
        where = f"{e.filename}:{e.start_line}"
        if e.end_line > e.start_line:
            where += f"-{e.end_line}"
        out.append(f"{where}")
        source = failed.info.source if failed is not None and failed.info else ""
        for n, line in enumerate(source.splitlines()):
            out.append(f" {e.start_line + n:>4} | {line}")
        out.append("")
    if failed is not None and failed.log:
        out.append("Logs:")
        out.append(f"> => {failed.name}:")
        out += [f"> {line}" for line in failed.log.splitlines()[-ERROR_LOG_LINES:]]
        out.append("")
    if e.exit_code:
        out.append(f"The step exited with code {e.exit_code}.")
    if e.hint:
        out.append(f"hint: {e.hint}")
    if e.exit_code or e.hint:
        out.append("")
    return out


def _stamp(seconds: float) -> str:
    """A log line's time since its step started, with BuildKit's precision."""
    prec = 3 if seconds < 10 else 2 if seconds < 100 else 1
    return f"{seconds:.{prec}f}"


def _vertex_block(v: VertexRecord, status: str) -> list[str]:
    n = v.number
    out = [f"#{n} {v.name}"]
    if v.miss_reason:
        out.append(f"#{n} not cached: {v.miss_reason}")
    start = v.started or 0.0
    partial = ""
    partial_stamp = ""
    for when, text in v.log_chunks:
        pieces = (partial + text).split("\n")
        stamp = partial_stamp or _stamp(max(0.0, when - start))
        for piece in pieces[:-1]:
            out.append(f"#{n} {stamp} {piece}")
            stamp = _stamp(max(0.0, when - start))
        partial = pieces[-1]
        partial_stamp = stamp if partial else ""
    if partial:
        out.append(f"#{n} {partial_stamp} {partial}")
    if v.state == "failed":
        out.append(f"#{n} ERROR: {v.error}")
    elif v.state == "cached":
        out.append(f"#{n} CACHED")
    elif v.state == "done":
        out.append(f"#{n} DONE {v.duration:.1f}s")
    elif status == "canceled":
        out.append(f"#{n} CANCELED")
    elif status == "killed":
        out.append(f"#{n} ... (unfinished: the build was killed)")
    else:
        out.append(f"#{n} ...")
    return out


def logs_text(r: BuildRecord, *, step: int | None = None) -> str:
    """The record's logs as plain progress prints them, one block per step (`#N` as the
    build numbered them); `step`: that step's block only."""
    from pybuild.errors import NotFoundError

    vertices = list(r.vertices)
    if step is not None:
        v = r.vertex(step)
        if v is None:
            raise NotFoundError(f"build {r.ref} has no step #{step} (it has "
                                f"#1-#{len(vertices)})" if vertices else
                                f"build {r.ref} recorded no steps")
        vertices = [v]
    blocks = ["\n".join(_vertex_block(v, r.status)) for v in vertices]
    return "\n\n".join(blocks) + ("\n" if blocks else "")

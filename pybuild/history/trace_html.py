"""The timeline as one self-contained HTML file: the data as JSON, the CSS and the script
inline; no network, no external script. The script draws everything with textContent,
so nothing from a record (step names, logs) is ever parsed as markup."""

from __future__ import annotations

import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from pybuild.history.model import BuildRecord
from pybuild.history.timeline import Timeline, build_timeline


def _asset(name: str) -> str:
    return (resources.files("pybuild.history") / "assets" / name).read_text("utf-8")


def timeline_data(t: Timeline) -> dict[str, Any]:
    """The JSON the page's script draws (also handy for other viewers)."""
    r = t.record
    ran = sum(1 for b in t.bars if b.state in ("done", "failed", "running"))
    return {
        "version": 1,
        "build": {
            "ref": r.ref, "name": r.name, "status": r.status, "started": t.started_text,
            "created": r.created, "duration": round(t.duration, 6),
            "platforms": list(r.request.platforms), "target": r.request.target,
            "error": r.error.message if r.error else "",
            "steps": {"total": r.total_steps, "completed": r.completed_steps,
                      "cached": r.cached_steps, "ran": ran},
            "critical_seconds": round(t.critical_seconds, 6),
            "max_parallelism": t.max_parallelism,
        },
        "groups": [{"label": g.label, "stage": g.stage, "platform": g.platform}
                   for g in t.groups],
        "bars": [{"n": b.number, "d": b.digest, "name": b.name, "cmd": b.command,
                  "g": b.group, "s": round(b.start, 6), "e": round(b.end, 6),
                  "st": b.state, "crit": b.critical, "miss": b.miss_reason, "err": b.error,
                  "log": b.log_tail, "clip": b.log_clipped, "src": b.source, "loc": b.location,
                  "in": list(b.inputs)} for b in t.bars],
        "critical": list(t.critical),
        "parallelism": [[round(x, 6), n] for x, n in t.parallelism],
        "ticks": list(t.ticks),
    }


def _script_json(value: Any) -> str:
    """JSON safe inside <script>: no "</script>", "<!--" or "]]>" can close it early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(record: BuildRecord) -> str:
    t = build_timeline(record)
    title = html.escape(f"{record.name or record.ref} · pybuild build timeline")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # No network: everything is inline, and the policy forbids loading anything else.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{title}</title><style>{_asset('timeline.css')}</style></head>\n"
        "<body><main id=\"timeline\" data-generator=\"pybuild\"></main>\n"
        "<noscript><p style=\"color:#ccc;padding:20px\">The timeline needs JavaScript; "
        "`pybuild history trace REF --format svg` draws a static picture.</p></noscript>\n"
        f"<script type=\"application/json\" id=\"pybuild-data\">{_script_json(timeline_data(t))}"
        "</script>\n"
        f"<script>{_asset('timeline.js')}</script>\n</body></html>\n"
    )


def write_timeline(record_dir: Path) -> Path:
    """Renders the record's timeline to `timeline.html` beside it (atomically); returns
    the path (what `history open` opens, and what `--timeline` prints after a build)."""
    from pybuild.history.store import load

    page = record_dir / "timeline.html"
    tmp = page.with_name(f".timeline.html.{os.getpid()}")
    try:
        tmp.write_text(render_html(load(record_dir)), encoding="utf-8")
        os.replace(tmp, page)
    finally:
        tmp.unlink(missing_ok=True)
    return page

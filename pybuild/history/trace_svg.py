"""The timeline as a static SVG picture: the same chart as the HTML page (bars grouped by
stage and platform, cached marks, the critical path, parallelism), every row drawn,
details in each bar's <title> (a tooltip in any viewer)."""

from __future__ import annotations

import itertools
from html import escape

from pybuild.history.model import BuildRecord
from pybuild.history.timeline import Timeline, build_timeline, format_seconds

WIDTH = 1400
LABEL = 440
ROW = 22
TOP = 168  # where the first row starts
PALETTE = ("#7aa2ff", "#3ddc97", "#ffc94d", "#c77dff", "#4cc9f0", "#ff8fab", "#94d82d",
           "#ffa94d", "#63e6be", "#e599f7")
STATUS_COLOURS = {"completed": "#3ddc97", "failed": "#ff5470", "canceled": "#ffc94d",
                  "killed": "#ffc94d", "running": "#7aa2ff"}
_STYLE = """
text { font-family: "DejaVu Sans", system-ui, sans-serif; font-size: 12px; fill: #e7eaf3; }
.muted { fill: #8d95ab; } .faint { fill: #5d6680; }
.mono { font-family: "DejaVu Sans Mono", monospace; }
.title { font-size: 18px; font-weight: bold; } .big { font-size: 15px; font-weight: bold; }
.grid { stroke: #1f2640; stroke-width: 1; } .sep { stroke: #252c44; stroke-width: 1; }
.group-bg { fill: #151a2c; } .group-label { font-weight: bold; }
.bar { stroke: none; } .bar.cached { fill-opacity: .35; stroke-width: 1; }
.bar.failed { fill: #ff5470; }
.bar.running { fill-opacity: .6; stroke-dasharray: 4 2; stroke-width: 1; }
.bar.critical { stroke: #ff8a3d; stroke-width: 2; }
#critical-path { fill: none; stroke: #ff8a3d; stroke-width: 1.5; stroke-dasharray: 5 3;
  opacity: .8; }
#parallelism { fill: #7aa2ff33; stroke: #7aa2ff; stroke-width: 1.2; }
"""


def _x(t: float, scale: float) -> float:
    return LABEL + 10 + t * scale


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def render_svg(record: BuildRecord) -> str:
    return svg_of(build_timeline(record))


def svg_of(t: Timeline) -> str:
    r = t.record
    end = max(t.duration, t.ticks[-1] if t.ticks else 0.0, 0.001)
    scale = (WIDTH - LABEL - 90) / end
    rows: list[tuple[str, int]] = []  # ("group", index) | ("bar", position in t.bars)
    for g in t.groups:
        rows.append(("group", g.index))
        rows += [("bar", i) for i, b in enumerate(t.bars) if b.group == g.index]
    height = TOP + len(rows) * ROW + 50
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" data-generator="pybuild" '
        f'data-bars="{len(t.bars)}" data-critical="{len(t.critical)}">',
        f"<title>{escape(r.name or r.ref)} · pybuild build timeline</title>",
        f"<style>{_STYLE}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="#0e1220"/>',
    ]
    status_colour = STATUS_COLOURS.get(r.status, "#8d95ab")
    pct = round(100 * r.cached_steps / r.total_steps) if r.total_steps else 0
    out += [
        f'<text x="20" y="32" class="title">{escape(_fit(r.name or r.ref, 60))}</text>',
        f'<text x="20" y="54" class="mono muted">build {escape(r.ref)} · started '
        f"{escape(t.started_text)}"
        f"{escape(' · ' + ', '.join(r.request.platforms)) if r.request.platforms else ''}"
        "</text>",
        f'<text x="{WIDTH - 20}" y="32" text-anchor="end" class="big" '
        f'style="fill:{status_colour}" id="status">{escape(r.status.upper())}</text>',
        f'<text x="20" y="84" class="big">{escape(format_seconds(t.duration))}'
        f'<tspan class="muted" font-weight="normal"> total · </tspan>'
        f"{r.completed_steps}/{r.total_steps}"
        f'<tspan class="muted" font-weight="normal"> steps, {r.cached_steps} cached ({pct}%) · '
        f"</tspan>"
        f'<tspan style="fill:#ff8a3d">{escape(format_seconds(t.critical_seconds))}</tspan>'
        f'<tspan class="muted" font-weight="normal"> critical path ({len(t.critical)} steps) · '
        f"</tspan>×{t.max_parallelism}"
        f'<tspan class="muted" font-weight="normal"> most at once</tspan></text>',
    ]
    if r.error is not None:
        out.append(f'<text x="20" y="106" style="fill:#ff5470">'
                   f"{escape(_fit('error: ' + r.error.message.splitlines()[0], 150))}</text>")

    # parallelism strip and axis
    strip_top, strip_h = 112, 34
    peak = max(1, t.max_parallelism)
    d = f"M{_x(0, scale):.1f},{strip_top + strip_h}"
    prev_y = float(strip_top + strip_h)
    for when, n in t.parallelism:
        y = strip_top + strip_h - n / peak * (strip_h - 4)
        d += f" L{_x(when, scale):.1f},{prev_y:.1f} L{_x(when, scale):.1f},{y:.1f}"
        prev_y = y
    d += f" L{_x(t.duration, scale):.1f},{prev_y:.1f} L{_x(t.duration, scale):.1f}," \
         f"{strip_top + strip_h} Z"
    out += [f'<text x="{LABEL - 10}" y="{strip_top + 22}" text-anchor="end" class="muted">'
            f"running steps (max {t.max_parallelism})</text>",
            f'<path id="parallelism" d="{d}"/>']
    grid_bottom = TOP + len(rows) * ROW
    out.append('<g id="axis">')
    for i, tick in enumerate(t.ticks):
        x = _x(tick, scale)
        anchor = "start" if i == 0 else "middle"
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" '
                   f'y2="{grid_bottom}"/><text x="{x:.1f}" y="{TOP - 10}" '
                   f'text-anchor="{anchor}" class="muted">{escape(format_seconds(tick))}</text>')
    out.append("</g>")
    out.append(f'<line class="sep" x1="{LABEL}" y1="{strip_top}" x2="{LABEL}" '
               f'y2="{grid_bottom}"/>')

    # rows
    centres: dict[int, tuple[float, float, float]] = {}  # number -> (x start, x end, y)
    out.append('<g id="rows">')
    for row, (kind, index) in enumerate(rows):
        y = TOP + row * ROW
        if kind == "group":
            g = t.groups[index]
            members = [b for b in t.bars if b.group == g.index]
            colour = PALETTE[g.index % len(PALETTE)]
            ran = sum(1 for b in members if b.state != "cached")
            out.append(
                f'<g class="group" data-group="{g.index}">'
                f'<rect class="group-bg" x="0" y="{y}" width="{WIDTH}" height="{ROW}"/>'
                f'<rect x="14" y="{y + 6}" width="10" height="10" rx="3" fill="{colour}"/>'
                f'<text x="32" y="{y + 15}" class="group-label">{escape(_fit(g.label, 40))}'
                f'<tspan class="muted" font-weight="normal">  {len(members)} steps · {ran} ran'
                "</tspan></text></g>")
            continue
        b = t.bars[index]
        colour = PALETTE[b.group % len(PALETTE)]
        x0, x1 = _x(b.start, scale), _x(b.end, scale)
        width = max(10.0 if b.state == "cached" else 3.0, x1 - x0)
        classes = f"bar {b.state}" + (" critical" if b.critical else "")
        tip = [f"#{b.number} {b.name}", f"{b.state} · {format_seconds(b.duration)} · at "
               f"+{format_seconds(b.start)}"]
        if b.miss_reason:
            tip.append(f"not cached: {b.miss_reason}")
        if b.error:
            tip.append(f"error: {b.error}")
        if b.critical:
            tip.append("on the critical path")
        prefix, _, rest = b.name.partition("] ") if b.name.startswith("[") else ("", "", b.name)
        label = (f'<tspan class="muted">{escape(prefix)}] </tspan>{escape(_fit(rest, 52))}'
                 if prefix else escape(_fit(b.name, 56)))
        dot = (f'<circle cx="54" cy="{y + 11}" r="3.5" fill="#ff8a3d"/>' if b.critical else "")
        after = "cached" if b.state == "cached" else format_seconds(b.duration)
        out.append(
            f'<g class="vertex" data-n="{b.number}" data-digest="{escape(b.digest)}">'
            f"<title>{escape(chr(10).join(tip))}</title>"
            f'<text x="40" y="{y + 15}" text-anchor="end" class="faint">#{b.number}</text>{dot}'
            f'<text x="62" y="{y + 15}">{label}</text>'
            f'<rect class="{classes}" x="{x0:.1f}" y="{y + 4}" width="{width:.1f}" '
            f'height="{ROW - 8}" rx="3" fill="{colour}" stroke="{colour}"/>'
            f'<text x="{x0 + width + 6:.1f}" y="{y + 15}" class="muted">{escape(after)}</text>'
            "</g>")
        centres[b.number] = (x0, x0 + width, y + ROW / 2)
    out.append("</g>")

    path = [centres[n] for n in t.critical if n in centres]
    if len(path) > 1:
        d = ""
        for (_, xe, ye), (xs, _, ys) in itertools.pairwise(path):
            turn = max(xe, xs)  # from a bar's end along its row, down to the next's start
            d += (f"M{xe:.1f},{ye:.1f} L{turn:.1f},{ye:.1f} L{turn:.1f},{ys:.1f} "
                  f"L{xs:.1f},{ys:.1f} ")
        out.append(f'<path id="critical-path" d="{d.strip()}"/>')

    legend_y = grid_bottom + 30
    out.append(f'<g id="legend" transform="translate(20,{legend_y})">'
               '<rect x="0" y="-10" width="16" height="10" rx="3" fill="#7aa2ff"/>'
               '<text x="22" y="0" class="muted">ran</text>'
               '<rect x="70" y="-10" width="16" height="10" rx="3" fill="#8d95ab" '
               'fill-opacity=".35" stroke="#8d95ab"/><text x="92" y="0" class="muted">cached'
               '</text><rect x="160" y="-10" width="16" height="10" rx="3" fill="#7aa2ff" '
               'stroke="#ff8a3d" stroke-width="2"/><text x="182" y="0" class="muted">'
               'critical path</text><rect x="280" y="-10" width="16" height="10" rx="3" '
               'fill="#ff5470"/><text x="302" y="0" class="muted">failed</text>'
               f'<text x="{WIDTH - 40}" y="0" text-anchor="end" class="faint">pybuild history '
               "trace</text></g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"

"""The timeline: critical path, parallelism, groups; the HTML page and the SVG picture
(well-formed, the structure they promise, nothing from a record parsed as markup)."""

from __future__ import annotations

import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from pybuild.builder.events import (
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexLog,
    VertexMiss,
    VertexStarted,
)
from pybuild.history import BuildRecord, BuildRecorder, RequestSummary, VertexInfo
from pybuild.history.timeline import build_timeline, nice_ticks
from pybuild.history.trace_html import render_html
from pybuild.history.trace_svg import render_svg

SVG = "{http://www.w3.org/2000/svg}"


def _d(i: int) -> str:
    return "sha256:" + format(i, "064x")


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def synthetic(root: Path, n: int = 500, *, seed: int = 7, fail: bool = False) -> BuildRecord:
    """A recorded build of `n` vertices over 5 stages x 2 platforms: a chain in each
    stage, each stage's first step reading another stage's last; some cached."""
    rng = random.Random(seed)
    clock = Clock()
    rec = BuildRecorder(root, clock=clock)
    rec.start(RequestSummary(name="synthetic", platforms=("linux/amd64", "linux/arm64")))
    groups = [(f"stage{s}", p) for s in range(5) for p in ("linux/amd64", "linux/arm64")]
    infos, plan = [], []
    per = n // len(groups)
    for g, (stage, platform) in enumerate(groups):
        for k in range(per):
            i = g * per + k
            inputs = (_d(i - 1),) if k else ((_d(g * per - 1),) if g else ())
            name = f"[{platform} {stage} {k + 1}/{per}] RUN step {i}"
            infos.append(VertexInfo(digest=_d(i), name=name, kind="exec", stage=stage,
                                    platform=platform, inputs=inputs, command=f"RUN step {i}"))
            plan.append((i, name, rng.random() < 0.3, rng.uniform(0.01, 0.4)))
    rec.add_vertices(infos)
    for i, name, cached, seconds in plan:  # in order (each waits for its input)
        d = _d(i)
        if cached:
            rec(VertexCached(digest=d, name=name))
            continue
        rec(VertexMiss(digest=d, name=name, reason="the step's files changed: src/x.c"))
        rec(VertexStarted(digest=d, name=name))
        clock.t += seconds / 2
        rec(VertexLog(digest=d, name=name, data=f"building {i}\n"))
        clock.t += seconds / 2
        if fail and i == len(plan) - 1:
            rec(VertexFailed(digest=d, name=name, error="exit code: 1"))
        else:
            rec(VertexDone(digest=d, name=name, seconds=seconds))
    record = rec.finish()
    assert record is not None
    return record


def test_critical_path_and_parallelism(tmp_path: Path) -> None:
    clock = Clock()
    rec = BuildRecorder(tmp_path, clock=clock)
    rec.start(RequestSummary(name="diamond"))
    a, b, c, d = (_d(i) for i in range(4))
    rec.add_vertices([VertexInfo(digest=a, name="a", stage="base"),
                      VertexInfo(digest=b, name="b", stage="x", inputs=(a,)),
                      VertexInfo(digest=c, name="c", stage="y", inputs=(a,)),
                      VertexInfo(digest=d, name="d", stage="final", inputs=(b, c))])
    t0 = clock.t
    steps = [("start", a, 0), ("done", a, 1), ("start", b, 1), ("start", c, 1),
             ("done", b, 2), ("done", c, 4), ("start", d, 4), ("done", d, 5)]
    for kind, digest, at in steps:
        clock.t = t0 + at
        rec(VertexStarted(digest=digest, name=digest) if kind == "start" else
            VertexDone(digest=digest, name=digest, seconds=0))
    record = rec.finish()
    assert record is not None
    t = build_timeline(record)
    by_digest = {bar.digest: bar for bar in t.bars}
    assert [by_digest[x].critical for x in (a, b, c, d)] == [True, False, True, True]
    assert t.critical == (1, 3, 4)  # a -> c (the slower input) -> d
    assert t.max_parallelism == 2
    assert by_digest[d].inputs == (2, 3)
    assert [g.stage for g in t.groups] == ["base", "x", "y", "final"]  # by first start


def test_ticks_are_round() -> None:
    assert nice_ticks(1.8) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8)
    assert nice_ticks(95)[:3] == (0.0, 10.0, 20.0) and nice_ticks(95)[-1] == 100.0


def test_500_vertices_html_and_svg(tmp_path: Path) -> None:
    record = synthetic(tmp_path, 500)
    t = build_timeline(record)
    assert len(t.bars) == 500 and len(t.groups) == 10
    assert t.critical and all(t.bars[0].start <= b.end for b in t.bars)
    page = render_html(record)
    data = json.loads(re.search(r'<script type="application/json" id="pybuild-data">(.*?)'
                                r"</script>", page, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["bars"]) == 500 and data["critical"] == list(t.critical)
    assert "src=" not in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", "")  # nothing to fetch
    svg = render_svg(record)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    vertices = root.findall(f".//{SVG}g[@class='vertex']")
    assert len(vertices) == 500
    bars = [g.find(f"{SVG}rect") for g in vertices]
    assert all(b is not None and b.get("class", "").startswith("bar ") for b in bars)
    critical = [g for g, b in zip(vertices, bars, strict=True)
                if "critical" in (b.get("class") or "").split()]  # type: ignore[union-attr]
    assert {int(g.get("data-n", 0)) for g in critical} == set(t.critical)
    assert all(g.find(f"{SVG}title") is not None for g in vertices)
    assert root.find(f".//{SVG}path[@id='critical-path']") is not None
    assert root.find(f".//{SVG}path[@id='parallelism']") is not None
    cached = [b for b in bars if "cached" in (b.get("class") or "")]  # type: ignore[union-attr]
    assert len(cached) == sum(1 for b in t.bars if b.state == "cached") > 0
    assert len(root.findall(f".//{SVG}g[@class='group']")) == 10


def test_hostile_text_is_never_markup(tmp_path: Path) -> None:
    clock = Clock()
    rec = BuildRecorder(tmp_path, clock=clock)
    rec.start(RequestSummary(name="</script><script>alert(1)</script>"))
    evil = '[1/1] RUN echo "</script><img src=x onerror=alert(1)>" <!-- ]]> &amp;'
    rec(VertexStarted(digest=_d(1), name=evil))
    rec(VertexLog(digest=_d(1), name=evil, data="</script><script>alert(2)</script>\n"))
    rec(VertexDone(digest=_d(1), name=evil, seconds=0))
    record = rec.finish()
    assert record is not None
    page = render_html(record)
    body = page.split('id="pybuild-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body and ">" not in body  # the data cannot close its script element
    assert json.loads(body)["bars"][0]["name"] == evil
    assert page.count("<script") == 2  # the data and the page's own script, nothing else
    svg = render_svg(record)
    ET.fromstring(svg)  # well-formed despite the text
    assert "<img" not in svg and "<script" not in svg

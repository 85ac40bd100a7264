"""The timeline of a real multi-stage, multi-platform build in headless Chromium: the page
draws its bars, the critical path and the cache marks (read back from the DOM after the
script ran), a screenshot is kept under the test's tmp dir; the SVG validates; a
500-step build stays light (its rows are virtualised)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from pybuild.history import store
from pybuild.history.trace_html import render_html
from tests.integration.conftest import run_pybuild
from tests.integration.test_executor_support import write_context
from tests.integration.test_history_support import MULTI_STAGE, browse, recorded_build
from tests.tooling import require
from tests.unit.test_history_timeline import synthetic

SVG = "{http://www.w3.org/2000/svg}"


class Dom(HTMLParser):
    """The elements of a dumped DOM: (tag, attributes) in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def with_class(self, *names: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if set(names) <= set(a.get("class", "").split())]

    def by_id(self, ident: str) -> dict[str, str]:
        return next(a for _, a in self.elements if a.get("id") == ident)


def _dom(page: Path, size: str = "1500,900") -> Dom:
    r = browse(page, f"--window-size={size}", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    return Dom(r.stdout)


def _screenshot(page: Path, png: Path, size: str = "1500,900", fragment: str = "") -> None:
    r = browse(page, f"--window-size={size}", f"--screenshot={png}", fragment=fragment)
    assert r.returncode == 0 and png.stat().st_size > 10_000, r.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_of_a_multi_platform_build(fresh_root: Path, trav: Path,
                                            tmp_path: Path) -> None:
    require("qemu-aarch64")
    ctx = write_context(trav / "ctx", MULTI_STAGE)
    warm = recorded_build(fresh_root, ctx, platform="linux/amd64,linux/arm64", tags=["tl:1"])
    assert warm.code == 0, warm.err
    # A changed last step: the stages before it come from the cache, the rest runs.
    (ctx / "Dockerfile").write_text(MULTI_STAGE + "RUN echo one more step\n")
    r = recorded_build(fresh_root, ctx, platform="linux/amd64,linux/arm64", tags=["tl:2"])
    assert r.code == 0, r.err
    ref = r.out.splitlines()[0].strip()
    record = store.load(store.resolve(fresh_root, ref))
    page, svg = tmp_path / "timeline.html", tmp_path / "timeline.svg"
    t = run_pybuild(fresh_root, "history", "trace", ref, "-o", str(page))
    assert t.code == 0, t.err
    t = run_pybuild(fresh_root, "history", "trace", ref, "-o", str(svg))
    assert t.code == 0, t.err

    dom = _dom(page)
    main = dom.by_id("timeline")
    assert main.get("data-ready") == "1"
    assert int(main["data-bars"]) == len(record.vertices)
    bars = dom.with_class("bar")
    assert len(bars) == len(record.vertices)  # all rows fit: all drawn
    assert {b["data-digest"] for b in bars} == {v.digest for v in record.vertices}
    critical = dom.with_class("bar", "critical")
    assert 2 <= len(critical) == int(main["data-critical"])
    cached = dom.with_class("bar", "cached")
    assert len(cached) == record.cached_steps > 0
    assert all(int(b["data-n"]) for b in critical)
    groups = [a for _, a in dom.elements if "group-row" in a.get("class", "").split()]
    assert {v.info.platform for v in record.vertices if v.info} == {"linux/amd64",
                                                                   "linux/arm64"}
    assert len(groups) >= 8  # base, deps, tools, final, for each platform
    assert dom.by_id("parallelism").get("d", "").startswith("M0,")
    png = tmp_path / "timeline.png"
    _screenshot(page, png)
    _screenshot(page, tmp_path / "details.png", fragment=f"step={critical[-1]['data-n']}")

    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg" and root.get("data-bars") == str(len(record.vertices))
    vertices = root.findall(f".//{SVG}g[@class='vertex']")
    assert {g.get("data-digest") for g in vertices} == {v.digest for v in record.vertices}
    rects = [g.find(f"{SVG}rect") for g in vertices]
    assert sum("critical" in (r.get("class") or "") for r in rects if r is not None) == \
        len(critical)
    assert root.find(f".//{SVG}path[@id='critical-path']") is not None
    _screenshot(svg, tmp_path / "timeline-svg.png", size="1400,900")


def test_a_500_step_timeline_stays_light(tmp_path: Path) -> None:
    record = synthetic(tmp_path / "root", 500)
    page = tmp_path / "big.html"
    page.write_text(render_html(record))
    dom = _dom(page)
    main = dom.by_id("timeline")
    assert main.get("data-ready") == "1" and main.get("data-bars") == "500"
    drawn = dom.with_class("bar")
    assert 10 < len(drawn) < 120  # only the rows in view (and a margin) are in the DOM
    assert int(main["data-rows"]) == 500 + 10  # every step and group has its row
    _screenshot(page, tmp_path / "big.png")

"""The `--call=outline|targets|check` answers (BuildKit's `frontend/subrequests/outline`,
`targets` and `lint` types): values with their `result.json` and `result.txt` forms.

`to_json()` gives what BuildKit's frontend returns as `result.json` (Go's encoding/json:
empty fields omitted, `sources` base64), which buildx prints for `--call=…,format=json`;
`to_text()` gives `result.txt`, which buildx prints otherwise.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from pybuild.frontend.results import BuildWarning, SourceRange


def location_json(r: SourceRange | None, source_index: int = 0) -> dict[str, Any] | None:
    """A `pb.Location` as Go marshals it (zero fields omitted)."""
    if r is None:
        return None
    out: dict[str, Any] = {"ranges": [{"start": {"line": r.start_line},
                                       "end": {"line": r.end_line}}]}
    if source_index:
        out["sourceIndex"] = source_index
    return out


def _omit_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in ("", None, False, [], {})}


def _tabwrite(rows: list[list[str]], padding: int) -> str:
    """Go's text/tabwriter (minwidth 0, padchar ' '): every cell but a row's last is padded
    to its column's widest cell plus `padding`."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    out = []
    for row in rows:
        cells = [c.ljust(widths[i] + padding) for i, c in enumerate(row[:-1])]
        out.append("".join(cells) + row[-1])
    return "".join(line + "\n" for line in out)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlineArg:
    name: str
    value: str = ""
    description: str = ""
    location: SourceRange | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **_omit_empty({
            "description": self.description, "value": self.value,
            "location": location_json(self.location)})}


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlineSecret:
    """A secret (or, in `Outline.ssh`, an SSH agent id) the build uses."""

    name: str
    required: bool = False
    location: SourceRange | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **_omit_empty({
            "required": self.required, "location": location_json(self.location)})}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outline:
    """`frontend.outline` 1.0.0: what a target can be given."""

    name: str = ""
    description: str = ""
    args: tuple[OutlineArg, ...] = ()
    secrets: tuple[OutlineSecret, ...] = ()
    ssh: tuple[OutlineSecret, ...] = ()
    sources: tuple[bytes, ...] = ()

    VERSION = "1.0.0"

    def to_json(self) -> dict[str, Any]:
        return _omit_empty({
            "name": self.name, "description": self.description,
            "args": [a.to_json() for a in self.args],
            "secrets": [s.to_json() for s in self.secrets],
            "ssh": [s.to_json() for s in self.ssh],
            "sources": [base64.b64encode(s).decode() for s in self.sources]})

    def to_text(self) -> str:
        """outline.PrintOutline."""
        out = ""
        if self.name or self.description:
            rows = [["TARGET:", self.name or "(default)"]]
            if self.description:
                rows.append(["DESCRIPTION:", self.description])
            out += _tabwrite(rows, 1) + "\n"
        if self.args:
            out += _tabwrite([["BUILD ARG", "VALUE", "DESCRIPTION"],
                              *([a.name, a.value, a.description] for a in self.args)], 3) + "\n"
        for title, items in (("SECRET", self.secrets), ("SSH", self.ssh)):
            if items:
                out += _tabwrite([[title, "REQUIRED"],
                                  *([s.name, "true" if s.required else ""] for s in items)],
                                 3) + "\n"
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str = ""
    default: bool = False
    description: str = ""
    base: str = ""
    platform: str = ""
    location: SourceRange | None = None

    def to_json(self) -> dict[str, Any]:
        return _omit_empty({
            "name": self.name, "default": self.default, "description": self.description,
            "base": self.base, "platform": self.platform,
            "location": location_json(self.location)})


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetList:
    """`frontend.targets` 1.0.0: the stages of a Dockerfile."""

    targets: tuple[Target, ...] = ()
    sources: tuple[bytes, ...] = ()

    VERSION = "1.0.0"

    def to_json(self) -> dict[str, Any]:
        return {"targets": [t.to_json() for t in self.targets],
                "sources": [base64.b64encode(s).decode() for s in self.sources]}

    def to_text(self) -> str:
        """targets.PrintTargets."""
        rows = [["TARGET", "DESCRIPTION"]]
        for t in self.targets:
            name = t.name
            if not name and t.default:
                name = "(default)"
            elif t.default:
                name = f"{name} (default)"
            rows.append([name, t.description])
        return _tabwrite(rows, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class LintError:
    """The error a check run stopped at (BuildKit's lint `BuildError`)."""

    message: str
    location: SourceRange | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LintReport:
    """`frontend.lint` 1.0.0: the build checks of a Dockerfile (`--call=check`)."""

    filename: str
    source: bytes
    warnings: tuple[BuildWarning, ...] = ()
    error: LintError | None = None

    VERSION = "1.0.0"

    @property
    def status_code(self) -> int:
        """result.statuscode: buildx exits with it (1 when there is anything to report)."""
        return 1 if self.warnings or self.error is not None else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "warnings": [{"ruleName": w.rule, **_omit_empty({
                "description": w.description, "url": w.url, "detail": w.message,
                "location": location_json(w.ranges[0] if w.ranges else None) or {}})}
                for w in self.warnings],
            "sources": [{"filename": self.filename, "language": "Dockerfile",
                         "data": base64.b64encode(self.source).decode()}],
        }
        if self.error is not None:
            out["buildError"] = {"message": self.error.message,
                                 "location": location_json(self.error.location) or {}}
        return out

    def to_text(self) -> str:
        """LintResults.PrintTo: each warning with its URL and the source lines around it,
        sorted by line."""
        out = []
        for w in sorted(self.warnings, key=lambda w: (w.line, w.rule)):
            text = f"\nWARNING: {w.rule}"
            if w.url:
                text += f" - {w.url}"
            text += f"\n{w.message}\n" + source_snippet(self.filename, self.source, w.ranges)
            out.append(text)
        return "".join(out)

    def error_text(self) -> str:
        """LintResults.PrintErrorTo."""
        if self.error is None:
            return ""
        ranges = (self.error.location,) if self.error.location else ()
        return self.error.message + "\n" + source_snippet(self.filename, self.source, ranges)


def source_snippet(filename: str, source: bytes, ranges: tuple[SourceRange, ...]) -> str:
    """errdefs.Source.Print: the lines of `ranges` marked `>>>`, with context around."""
    if not ranges:
        return ""
    lines = source.decode("utf-8", "replace").split("\n")
    start = min(r.start_line for r in ranges)
    end = max(max(r.end_line, r.start_line) for r in ranges)
    if start > len(lines) or start < 1:
        return ""
    end = min(end, len(lines))
    pad = 4 if end == start else 2
    first = start
    p = 0
    while p < pad:
        if start > 1:
            start -= 1
            p += 1
        if end != len(lines):
            end += 1
            p += 1
        p += 1
    out = f"{filename}:{first}\n--------------------\n"
    for i in range(start, end + 1):
        mark = ">>>" if any(r.start_line <= i <= max(r.end_line, r.start_line)
                            for r in ranges) else "   "
        out += f" {i:3d} | {mark} {lines[i - 1]}\n"
    return out + "--------------------\n"


def dumps(value: Outline | TargetList | LintReport) -> str:
    """result.json as BuildKit writes it (json.MarshalIndent with two spaces)."""
    return json.dumps(value.to_json(), indent=2, ensure_ascii=False)

"""What the frontend reports besides the op DAG: typed build warnings.

A small module on purpose: callers (the CLI, memoized frontend results) import it without
importing the frontend itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRange:
    """Lines of the Dockerfile (1-based, inclusive), BuildKit's `pb.Range`."""

    start_line: int
    end_line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildWarning:
    """One build check warning, with what buildx shows for it (BuildKit's lint `Warning`
    and the `client.VertexWarning` the Dockerfile frontend emits during a build)."""

    rule: str  # e.g. "StageNameCasing"; "" for a warning that is not a lint rule
    message: str  # the formatted detail, e.g. "Stage name 'Foo' should be lowercase"
    description: str = ""  # the rule's description (VertexWarning.Detail[0])
    url: str = ""  # the rule's documentation page
    filename: str = ""
    ranges: tuple[SourceRange, ...] = ()

    @property
    def line(self) -> int:
        return self.ranges[0].start_line if self.ranges else 0

    @property
    def short(self) -> str:
        """BuildKit's `linter.LintFormatShort`: `Rule: message (line N)`, as buildx prints
        it after `WARN: ` (progress) or ` - ` (the closing summary)."""
        text = f"{self.rule}: {self.message}" if self.rule else self.message
        return f"{text} (line {self.line})" if self.line > 0 else text

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}: " if self.filename else ""
        return where + (f"{self.rule}: " if self.rule else "") + self.message

"""Parser directives (``# syntax=``, ``# escape=``, ``# check=``).

Port of BuildKit's ``DirectiveParser``: directives are only recognised in the
leading block of comment lines; the first line that is not a valid directive
(a blank line, another comment, an unknown name, an instruction) ends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pybuild.gocompat import go_trimleft_space

VALID_DIRECTIVES = ("syntax", "escape", "check")
# Go's \s is ASCII [\t\n\f\r ] (no \v), unlike Python's.
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")


class DirectiveError(ValueError):
    """A repeated directive or an invalid escape token."""


@dataclass
class Directives:
    """Raw values of the parser directives found (None when absent)."""

    syntax: str | None = None
    escape: str | None = None
    check: str | None = None
    lines: dict[str, int] = field(default_factory=dict)  # name -> 1-based line


@dataclass
class DirectiveParser:
    """Feeds lines one at a time; stops looking after the leading block."""

    comment: str = "#"
    done: bool = False
    line: int = 0
    found: Directives = field(default_factory=Directives)

    def parse_line(self, text: str) -> tuple[str, str] | None:
        """The (name, value) directive on this line, if any."""
        self.line += 1
        if self.done:
            return None
        if not text.startswith(self.comment):
            self.done = True
            return None
        m = _DIRECTIVE.match(go_trimleft_space(text[len(self.comment) :]))
        if m is None:
            self.done = True
            return None
        name = m[1].lower()
        if name not in VALID_DIRECTIVES:
            self.done = True
            return None
        if name in self.found.lines:
            raise DirectiveError(f"only one {name} parser directive can be used")
        self.found.lines[name] = self.line
        setattr(self.found, name, m[2])
        return name, m[2]


def check_escape_token(value: str) -> str:
    """``setEscapeToken``: only a backslash or a backtick is allowed."""
    if value not in ("\\", "`"):
        raise DirectiveError(f"invalid escape token '{value}' does not match ` or \\")
    return value

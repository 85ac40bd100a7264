"""Where an instruction is, and attaching that place to an error without mutating it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TypeVar

from pybuild.errors import DockerfileSyntaxError, PybuildError, SourceLocation, UserError
from pybuild.gocompat import runes

E = TypeVar("E", bound=PybuildError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Loc:
    filename: str
    start_line: int
    end_line: int
    keyword: str
    text: str

    def location(self) -> SourceLocation:
        # Invalid bytes are shown as U+FFFD, as a terminal shows Go's raw bytes: an error
        # about a non-UTF-8 line must still print.
        return SourceLocation(self.filename, self.start_line, self.end_line,
                              instruction=self.keyword, text=runes(self.text))

    def error(self, message: str, *, hint: str | None = None,
              cls: type[UserError] = DockerfileSyntaxError) -> UserError:
        return cls(message, location=self.location(), hint=hint)


def located(exc: E, location: SourceLocation) -> E:
    """`exc` with `location` attached when it has none: a copy, so an error object that
    was raised (and may be held elsewhere) never changes after the raise."""
    if exc.location is not None:
        return exc
    new = copy.copy(exc)
    new.location = location
    return new.with_traceback(exc.__traceback__)

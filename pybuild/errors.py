"""Error hierarchy. Only the CLI renders errors; everything else raises data.

UserError: bad input, failed RUN step, missing image, ... (exit code 1 by default).
InternalError: a bug; rendered as one line plus "run with --debug".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where in a user's file an error points: 1-based inclusive line range."""

    filename: str
    start_line: int
    end_line: int
    instruction: str = ""  # the instruction keyword, e.g. "COPY"
    text: str = ""  # the offending source line(s), as written


class PybuildError(Exception):
    """Base of every error pybuild raises on purpose."""

    code: str = "error"
    exit_code: int = 1
    build_ref: str = ""  # the failed build's record in the history, when a build raised it

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        location: SourceLocation | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.location = location
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def with_location(self, location: SourceLocation) -> PybuildError:
        if self.location is None:
            self.location = location
        return self

    def __str__(self) -> str:
        if self.location is not None:
            loc = self.location
            where = f"{loc.filename}:{loc.start_line}"
            if loc.instruction:
                where += f" {loc.instruction}"
            return f"{where}: {self.message}"
        return self.message


class UserError(PybuildError):
    """The user's input (Dockerfile, flags, context, store contents) is wrong."""

    code = "user"


class DockerfileSyntaxError(UserError):
    code = "dockerfile-syntax"


class NotFoundError(UserError):
    code = "not-found"


class IntegrityError(UserError):
    """A blob's digest or size does not match what was expected."""

    code = "integrity"


class StepFailedError(UserError):
    """A RUN step exited non-zero (or its runtime failed); carries the step's full output."""

    code = "step-failed"

    def __init__(self, message: str, *, output: str = "", step_exit_code: int = 0,
                 **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.output = output
        self.step_exit_code = step_exit_code


class InternalError(PybuildError):
    code = "internal"

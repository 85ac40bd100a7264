"""`pybuild build --call=check|outline|targets` and `--check`: buildx's `--call` parsed
(`util/buildflags/callfunc.go`) and its answer printed as buildx's `printResult` prints
it, with buildx's exit status."""

from __future__ import annotations

import argparse
from typing import IO, TYPE_CHECKING

from pybuild.api import CALLS, CallFunc
from pybuild.cli.flags import csv_fields, go_bool, suggest
from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.api import Builder, LintReport, Outline, TargetList


def parse_call(text: str) -> CallFunc | None:
    """buildx's `ParseCallFunc`: `NAME[,format=json][,ignorestatus=BOOL]`; `build` (the
    default) is None; `lint` is the older name of `check`."""
    name = ""
    fmt = ""
    ignore = False
    for field in csv_fields(text, "--call"):
        key, eq, value = field.partition("=")
        if not eq:
            if name:
                raise UserError(f"invalid --call {text!r}: more than one request",
                                code="bad-flag")
            name = key
            continue
        match key:
            case "format":
                if value not in ("json", "text", ""):
                    raise UserError(f"invalid --call {text!r}: format {value!r} is not "
                                    f"supported{suggest(value, ('json',))}", code="bad-flag",
                                    hint="format=json, or no format for text")
                fmt = "json" if value == "json" else ""
            case "ignorestatus":
                parsed = go_bool(value)
                if parsed is None:
                    raise UserError(f"invalid --call {text!r}: invalid ignorestatus print "
                                    f"value: {value}", code="bad-flag")
                ignore = parsed
            case _:
                raise UserError(f"invalid --call {text!r}: invalid print field: {field}"
                                f"{suggest(key, ('format', 'ignorestatus'))}",
                                code="bad-flag")
    if name == "lint":
        name = "check"
    if name in ("", "build"):
        if fmt or ignore:
            raise UserError(f"invalid --call {text!r}: format and ignorestatus apply to "
                            "check, outline and targets", code="bad-flag")
        return None
    if name not in CALLS:
        raise UserError(f"--call {name}: unsupported request{suggest(name, CALLS)}",
                        code="bad-flag",
                        hint="pybuild answers build, check, outline and targets")
    return CallFunc(name=name, format=fmt, ignore_status=ignore)  # type: ignore[arg-type]



def print_result(answer: Outline | TargetList | LintReport, call: CallFunc, out: IO[str],
                 err: IO[str]) -> int:
    """buildx's `printResult`: the answer on `out`, as text or JSON; the exit status it
    gives (a check that found warnings or an error exits 1, unless `ignore_status`)."""
    from pybuild.api import LintReport
    from pybuild.api import subrequest_json as dumps

    if not isinstance(answer, LintReport):
        out.write(dumps(answer) + "\n" if call.format == "json" else answer.to_text())
        return 0
    count = len(answer.warnings)
    if call.format == "json":
        out.write(dumps(answer) + "\n")
    else:
        if count:
            found = "1 warning has been found!" if count == 1 else \
                f"{count} warnings have been found!"
            out.write(f"Check complete, {found}\n")
        out.write(answer.to_text())
    if answer.error is not None:
        # buildx returns the error (printed like the warnings, with its source lines):
        # exit 1 whatever ignorestatus says.
        if call.format != "json" and count:
            out.write("\n")
        out.flush()
        err.write("ERROR: " + answer.error_text())
        return 1
    if not count and call.format != "json":
        out.write("Check complete, no warnings found.\n")
    return 0 if call.ignore_status else answer.status_code


def run_call(args: argparse.Namespace, builder: Builder, call: CallFunc) -> int:
    """`build --call=...`: the request parsed as for a build (so its flags are checked
    the same way), the frontend asked, the answer printed on stdout."""
    import sys

    from pybuild.cli.build_command import build_request

    req = build_request(args)
    answer = builder.call(req, call.name)
    return print_result(answer, call, sys.stdout, sys.stderr)

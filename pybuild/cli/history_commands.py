"""`pybuild history`: build records, as `docker buildx history` shows them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.api import BuildHistory

DESCRIPTION = """\
Every build leaves a record in the pybuild root: the request (without secret values),
each step's timing, cache result and why it missed, its output (up to 2MiB a step,
$PYBUILD_STEP_LOG_MAX_SIZE), warnings, the result or the error. A killed build's record
says so. The 50 newest records of the last 48 hours are kept
($PYBUILD_HISTORY_MAX_RECORDS, $PYBUILD_HISTORY_MAX_AGE in seconds); `pybuild prune`
removes them by age too.

REF is a record id, a unique prefix of one, or ^N: ^0 is the newest build, ^1 the one
before it (as buildx counts). Without REF: the newest build."""


def add_parser(sub: Any) -> None:
    """Registers `history` and its subcommands on the CLI's subparsers."""
    h = sub.add_parser("history", help="list, inspect and draw build records",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    hs = h.add_subparsers(dest="history_command", metavar="COMMAND")

    ls = hs.add_parser("ls", help="list build records, newest first",
                       description="List build records, newest first: id, name, status, "
                       "age, duration, steps cached/total.")
    ls.add_argument("--format", default="table", choices=["table", "json"],
                    help="table (default) or json: one JSON object a line, as buildx")
    ls.add_argument("--no-trunc", action="store_true", help="do not shorten names")

    ins = hs.add_parser("inspect", help="summarise one build: request, timing, errors, and "
                        "why each step missed the cache")
    ins.add_argument("ref", nargs="?", default="", metavar="REF")
    ins.add_argument("--format", default="pretty", choices=["pretty", "json"],
                     help="pretty (default) or json")

    lg = hs.add_parser("logs", help="print a build's logs as plain progress printed them")
    lg.add_argument("ref", nargs="?", default="", metavar="REF")
    lg.add_argument("--step", type=int, default=None, metavar="N",
                    help="only step #N (the number plain progress gave it)")

    ex = hs.add_parser("export", help="write build records to a portable archive",
                       description="Write build records (with their timelines) to a .tar.gz "
                       "that `pybuild history import` reads on another machine.")
    ex.add_argument("refs", nargs="*", metavar="REF")
    ex.add_argument("-o", "--output", default="",
                    help="archive file (- for standard output, if it is not a terminal)")
    ex.add_argument("--all", action="store_true", help="export every record")

    im = hs.add_parser("import", help="add the records of an exported archive")
    im.add_argument("-f", "--file", action="append", default=[], required=True,
                    help="archive to read (- for standard input); repeatable")

    rm = hs.add_parser("rm", help="remove build records")
    rm.add_argument("refs", nargs="*", metavar="REF")
    rm.add_argument("--all", action="store_true", help="remove every finished record")

    op = hs.add_parser("open", help="draw a build's timeline and open it in a browser",
                       description="Render the build's timeline (HTML) next to its record "
                       "and open it in a browser; without one, print where it is.")
    op.add_argument("ref", nargs="?", default="", metavar="REF")

    tr = hs.add_parser("trace", help="draw a build's timeline to a file (HTML or SVG)",
                       description="Draw a Gantt chart of the build: one bar per step on a "
                       "time axis, grouped by stage and platform, cached steps marked, the "
                       "critical path highlighted, parallelism over time, and each step's "
                       "command, duration, miss reason and log tail (HTML: on hover and "
                       "click; SVG: in tooltips). Self-contained: no network.")
    tr.add_argument("ref", nargs="?", default="", metavar="REF")
    tr.add_argument("-o", "--output", default="",
                    help="file to write (- for standard output, if it is not a terminal)")
    tr.add_argument("--format", default="", choices=["", "html", "svg"],
                    help="html (default; also from a .html name) or svg (also from a .svg "
                    "name)")


def _root(args: argparse.Namespace) -> Path:
    if args.root:
        return Path(args.root).absolute()
    from pybuild.api import default_root

    return default_root()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    from pybuild.api import BuildHistory

    history = BuildHistory(_root(args))
    match args.history_command:
        case "ls":
            return _ls(history, args.format, args.no_trunc)
        case "inspect":
            return _inspect(history, args.ref, args.format)
        case "logs":
            return _logs(history, args.ref, args.step)
        case "export":
            return _export(history, args.refs, args.all, args.output)
        case "import":
            return _import(history, args.file)
        case "rm":
            return _rm(history, args.refs, args.all)
        case "open":
            return _open(history, args.ref)
        case "trace":
            return _trace(history, args.ref, args.output, args.format)
    if parser is not None:
        parser.parse_args(["history", "--help"])
    return 0


def _ls(history: BuildHistory, fmt: str, no_trunc: bool) -> int:
    from pybuild.api import history_text as text

    heads = history.records()
    if fmt == "json":
        for h in heads:
            print(json.dumps(text.ls_json(h)))
        return 0
    sys.stdout.write(text.ls_table(heads, now=time.time(), no_trunc=no_trunc))
    return 0


def _inspect(history: BuildHistory, ref: str, fmt: str) -> int:
    from pybuild.api import history_text as text

    record = history.get(ref)
    if fmt == "json":
        print(json.dumps(text.inspect_json(record), indent=2))
    else:
        sys.stdout.write(text.inspect_text(record, ref_given=bool(ref)))
    return 0


def _logs(history: BuildHistory, ref: str, step: int | None) -> int:
    from pybuild.api import history_text as text

    sys.stdout.write(text.logs_text(history.get(ref), step=step))
    return 0


def _writer(output: str, what: str) -> Any:
    if output in ("", "-"):
        if sys.stdout.isatty():
            raise UserError(f"refusing to write {what} to a terminal; use -o FILE")
        return None
    return Path(output)


def _export(history: BuildHistory, refs: list[str], everything: bool, output: str) -> int:
    dest = _writer(output, "an archive")
    if dest is None:
        history.export(refs, sys.stdout.buffer, everything=everything)
    else:
        n = history.export(refs, dest, everything=everything)
        print(f"exported {n} build record{'s' if n != 1 else ''} to {dest}", file=sys.stderr)
    return 0


def _import(history: BuildHistory, files: list[str]) -> int:
    for name in files:
        refs = history.import_archive(sys.stdin.buffer if name == "-" else Path(name))
        for ref in refs:
            print(ref)
    return 0


def _rm(history: BuildHistory, refs: list[str], everything: bool) -> int:
    for ref in history.remove(refs, everything=everything):
        print(ref)
    return 0


def _has_browser() -> bool:
    if os.environ.get("BROWSER"):
        return True
    if sys.platform == "darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open(history: BuildHistory, ref: str) -> int:
    page = history.timeline_page(ref)
    if _has_browser():
        import webbrowser

        if webbrowser.open(page.as_uri()):
            print(f"opened {page}")
            return 0
    print(page)
    print("(no browser to open it here: copy it, or `pybuild history trace REF -o FILE`)",
          file=sys.stderr)
    return 0


def _trace(history: BuildHistory, ref: str, output: str, fmt: str) -> int:
    if not fmt:
        fmt = "svg" if output.lower().endswith(".svg") else "html"
    record = history.get(ref)
    picture = history.picture(record, "svg" if fmt == "svg" else "html")
    dest = _writer(output, "the timeline")
    if dest is None:
        sys.stdout.write(picture)
        return 0
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(picture, encoding="utf-8")
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {dest}: {exc.strerror}") from None
    print(f"wrote the timeline of build {record.ref} to {dest}", file=sys.stderr)
    return 0

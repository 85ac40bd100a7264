"""Rendering of errors and build progress."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from pybuild.api import (
    CheckWarning,
    Event,
    Notice,
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexLog,
    VertexMiss,
    VertexStarted,
)
from pybuild.errors import PybuildError, StepFailedError


def render_error(exc: PybuildError, out: TextIO) -> None:
    """One clear message: where (file:line instruction), what, the line, and a hint."""
    loc = exc.location
    if loc is not None:
        where = f"{loc.filename}:{loc.start_line}"
        if loc.end_line and loc.end_line != loc.start_line:
            where += f"-{loc.end_line}"
        head = f"error: {where}"
        if loc.instruction:
            head += f": {loc.instruction}"
        print(f"{head}: {exc.message}", file=out)
        if loc.text:
            for n, line in enumerate(loc.text.splitlines()[:8]):
                print(f"  {loc.start_line + n:>4} | {line}", file=out)
    else:
        print(f"error: {exc.message}", file=out)
    output = exc.output if isinstance(exc, StepFailedError) else ""
    if output:
        print("---- output of the failed step ----", file=out)
        out.write(output if output.endswith("\n") else output + "\n")
        print("-----------------------------------", file=out)
    if exc.hint:
        print(f"hint: {exc.hint}", file=out)


class PlainProgress:
    """Plain lines with step numbers, as buildx --progress=plain prints them."""

    def __init__(self, out: TextIO = sys.stderr, *, explain: bool = True) -> None:
        self.out = out
        self.explain = explain
        self.numbers: dict[str, int] = {}
        self.named: set[str] = set()  # vertices whose name line is printed
        self.start = time.monotonic()

    def _n(self, digest: str) -> int:
        if digest not in self.numbers:
            self.numbers[digest] = len(self.numbers) + 1
        return self.numbers[digest]

    def __call__(self, event: Event) -> None:
        w = self.out.write
        match event:
            case VertexCached():
                w(f"#{self._n(event.digest)} {event.name}\n#{self._n(event.digest)} CACHED\n")
            case VertexMiss():
                if self.explain:
                    self.named.add(event.digest)
                    w(f"#{self._n(event.digest)} {event.name}\n"
                      f"#{self._n(event.digest)} not cached: {event.reason}\n")
            case VertexStarted():
                # Steps that are not cache lookups ([internal] …) have no miss line.
                if event.digest not in self.named:
                    w(f"#{self._n(event.digest)} {event.name}\n")
            case VertexLog():
                n = self._n(event.digest)
                t = time.monotonic() - self.start
                for line in event.data.splitlines():
                    w(f"#{n} {t:.3f} {line}\n")
            case VertexDone():
                w(f"#{self._n(event.digest)} DONE {event.seconds:.1f}s\n")
            case VertexFailed():
                w(f"#{self._n(event.digest)} ERROR: {event.error}\n")
            case CheckWarning():
                w(f"WARN: {event.short}\n")
            case Notice():
                w(f"{event.level}: {event.text}\n")
        self.out.flush()


class JsonProgress:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        data = {"type": type(event).__name__, **{k: getattr(event, k)
                                                 for k in event.__slots__}}
        self.out.write(json.dumps(data) + "\n")
        self.out.flush()


class QuietProgress:
    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice) and event.level == "warning":
            self.out.write(f"warning: {event.text}\n")


def render_check_summary(warnings: list[str], out: TextIO) -> None:
    """What buildx prints after a build whose Dockerfile failed checks."""
    if not warnings:
        return
    count = "1 warning found" if len(warnings) == 1 else f"{len(warnings)} warnings found"
    out.write(f"\n {count}:\n")
    for short in warnings:
        out.write(f" - {short}\n")

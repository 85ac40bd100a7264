"""The live terminal view (--progress=tty), like buildx's: a header with the elapsed time
and the number of steps done, one line per step (` => [stage 2/5] RUN make   1.2s`) with
its timer, CACHED / ERROR / CANCELED marks, under a running step why it was not cached and
the tail of its output; when the build ends the last frame stays as the summary
(`[+] Building 3.4s (5/5) FINISHED`). A failed step's full output is printed after the
view by the error renderer (render.render_error), not clipped to the tail.

Built on rich, imported lazily. Events arrive on the build's thread; rich's refresh thread
redraws the view 8 times a second (timers tick while a step runs), so the state is shared
under a lock. Never hold that lock while taking rich's (rich takes its own, then calls
`_render`, which takes ours)."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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

TAIL_LINES = 6  # lines of a running (or failed) step's output shown under it
MAX_TAIL_CHARS = 4096  # an unfinished line (no newline yet) is cut to its last chars


@dataclass(slots=True)
class _Step:
    number: int
    name: str
    state: str = "waiting"  # waiting | running | cached | done | failed | canceled
    started: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    tail: list[str] = field(default_factory=list)
    partial: str = ""  # output after the last newline

    def add_output(self, data: str) -> None:
        """Keep the last TAIL_LINES whole lines; a line split across chunks stays one."""
        lines = (self.partial + data).split("\n")
        self.partial = lines.pop()[-MAX_TAIL_CHARS:]
        self.tail.extend(lines)
        del self.tail[:-TAIL_LINES]

    def shown_tail(self) -> list[str]:
        lines = [*self.tail, self.partial] if self.partial else list(self.tail)
        return [_last_overwrite(x) for x in lines[-TAIL_LINES:]]

    def elapsed(self, now: float) -> float:
        if self.state == "running":
            return now - self.started
        return self.seconds


class TtyProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.steps: dict[str, _Step] = {}
        self.notices: list[tuple[str, str]] = []  # (level, text)
        self.start = time.monotonic()
        self.finished_at: float | None = None
        self.outcome = ""  # FINISHED | ERROR | CANCELED once the build is over
        self._lock = threading.Lock()
        self.live = Live(console=self.console, refresh_per_second=8, transient=False,
                         get_renderable=self._render)
        self.live.start()

    def _step(self, digest: str, name: str) -> _Step:
        step = self.steps.get(digest)
        if step is None:
            step = self.steps[digest] = _Step(number=len(self.steps) + 1, name=name)
        return step

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        with self._lock:
            match event:
                case VertexCached():
                    self._step(event.digest, event.name).state = "cached"
                case VertexMiss():
                    self._step(event.digest, event.name).reason = event.reason
                case VertexStarted():
                    s = self._step(event.digest, event.name)
                    s.state, s.started = "running", now
                case VertexLog():
                    self._step(event.digest, event.name).add_output(event.data)
                case VertexDone():
                    s = self._step(event.digest, event.name)
                    s.state, s.seconds = "done", event.seconds
                case VertexFailed():
                    s = self._step(event.digest, event.name)
                    s.seconds = now - s.started if s.state == "running" else 0.0
                    s.state = "failed"
                case CheckWarning():
                    self.notices.append(("WARN", event.short))
                case Notice():
                    self.notices.append((event.level, event.text))
        # A step that starts or fails is drawn at once (the periodic refresh could miss a
        # short step: its "not cached" reason would never reach the screen).
        if isinstance(event, VertexStarted | VertexFailed | Notice):
            self.live.refresh()

    # -- rendering -------------------------------------------------------------------------

    def _render(self) -> Any:
        with self._lock:
            return self._render_locked()

    def _render_locked(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic() if self.finished_at is None else self.finished_at
        final = self.finished_at is not None
        done = sum(1 for s in self.steps.values() if s.state in ("cached", "done"))
        header = f"[+] Building {now - self.start:.1f}s ({done}/{len(self.steps)})"
        if self.outcome:
            header += f" {self.outcome}"
        out: list[Any] = [Text(header, style="bold", no_wrap=True, overflow="ellipsis")]
        for level, text in self.notices:
            out.append(Text(f"{level}: {text}", style="yellow" if level != "info" else "dim",
                            no_wrap=True, overflow="ellipsis"))

        blocks: list[tuple[_Step, list[tuple[str, str, str]]]] = []
        for s in self.steps.values():
            rows = self._rows(s, now)
            if rows:
                blocks.append((s, rows))
        if not final:
            # Like buildx, when the view is taller than the terminal the oldest finished
            # steps give way to the running ones; the final frame lists every step.
            room = max(self.console.size.height - 1 - len(out), 1)
            height = sum(len(rows) for _, rows in blocks)
            kept: list[tuple[_Step, list[tuple[str, str, str]]]] = []
            for s, rows in blocks:
                if height > room and s.state in ("cached", "done"):
                    height -= len(rows)
                    continue
                kept.append((s, rows))
            blocks = kept

        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        for _, rows in blocks:
            for text, timer, style in rows:
                cell = (Text.from_ansi(text, style=style, no_wrap=True, overflow="ellipsis")
                        if style == "dim" else Text(text, style=style))
                grid.add_row(cell, Text(timer, style=style))
        if blocks:
            out.append(grid)
        return Group(*out)

    @staticmethod
    def _rows(s: _Step, now: float) -> list[tuple[str, str, str]]:
        """(text, timer, style) of the lines of one step."""
        t = f"{s.elapsed(now):.1f}s"
        match s.state:
            case "cached":
                return [(f" => CACHED {s.name}", t, "blue")]
            case "done":
                return [(f" => {s.name}", t, "green")]
            case "running":
                rows = [(f" => {s.name}", t, "bold cyan")]
                if s.reason:
                    rows.append((f"    not cached: {s.reason}", "", "dim"))
                return rows + [(f"    {line}", "", "dim") for line in s.shown_tail()]
            case "failed":
                return [(f" => ERROR {s.name}", t, "bold red"),
                        *((f"    {line}", "", "dim") for line in s.shown_tail())]
            case "canceled":
                return [(f" => CANCELED {s.name}", t, "yellow")]
        return []

    # -- the end -----------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Draw the final frame (the summary) and give the terminal back.

        `error` is why the build ended early; by default the exception being handled, as
        close() is called from the `finally:` around the build."""
        if error is None:
            error = sys.exc_info()[1]
        now = time.monotonic()
        with self._lock:
            for s in self.steps.values():
                if s.state == "running":  # stopped by Ctrl-C, SIGTERM or another failure
                    s.state, s.seconds = "canceled", now - s.started
            failed = any(s.state == "failed" for s in self.steps.values())
            if error is None:
                self.outcome = "FINISHED"
            elif failed or not _is_cancel(error):
                self.outcome = "ERROR"
            else:
                self.outcome = "CANCELED"
            self.finished_at = now
        self.live.stop()  # draws the last frame in full, shows the cursor again


def _last_overwrite(line: str) -> str:
    """What a terminal shows of a line that redraws itself with carriage returns (progress
    bars): the text after the last one; a CRLF line ending is just an ending."""
    return line.rstrip("\r").rpartition("\r")[2]


def _is_cancel(error: BaseException) -> bool:
    if isinstance(error, KeyboardInterrupt):
        return True
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(error, asyncio.CancelledError)

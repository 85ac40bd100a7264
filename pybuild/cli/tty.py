"""The live terminal view (--progress=tty): one line per step, timers, CACHED marks, the
tail of the running step's output, a summary at the end. Built on rich, imported lazily."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pybuild.builder.events import (
    Event,
    Notice,
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexLog,
    VertexMiss,
    VertexStarted,
)

TAIL_LINES = 6


@dataclass(slots=True)
class _Step:
    number: int
    name: str
    state: str = "waiting"  # waiting | running | cached | done | failed
    started: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    tail: list[str] = field(default_factory=list)


class TtyProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.steps: dict[str, _Step] = {}
        self.notices: list[str] = []
        self.start = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=False)
        self.live.start()

    def _step(self, digest: str, name: str) -> _Step:
        step = self.steps.get(digest)
        if step is None:
            step = self.steps[digest] = _Step(number=len(self.steps) + 1, name=name)
        return step

    def __call__(self, event: Event) -> None:
        match event:
            case VertexCached():
                self._step(event.digest, event.name).state = "cached"
            case VertexMiss():
                self._step(event.digest, event.name).reason = event.reason
            case VertexStarted():
                s = self._step(event.digest, event.name)
                s.state, s.started = "running", time.monotonic()
            case VertexLog():
                s = self._step(event.digest, event.name)
                s.tail.extend(event.data.splitlines())
                del s.tail[:-TAIL_LINES]
            case VertexDone():
                s = self._step(event.digest, event.name)
                s.state, s.seconds = "done", event.seconds
            case VertexFailed():
                s = self._step(event.digest, event.name)
                s.state = "failed"
                s.seconds = time.monotonic() - s.started if s.started else 0.0
            case Notice():
                self.notices.append(f"{event.level}: {event.text}")
        self.live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        lines: list[Any] = []
        elapsed = time.monotonic() - self.start
        done = sum(1 for s in self.steps.values() if s.state in ("cached", "done"))
        lines.append(Text(f"Building {elapsed:5.1f}s ({done}/{len(self.steps)} steps)",
                          style="bold"))
        for n in self.notices:
            lines.append(Text(n, style="yellow"))
        for s in self.steps.values():
            if s.state == "cached":
                lines.append(Text(f" => CACHED {s.name}", style="blue"))
            elif s.state == "running":
                t = time.monotonic() - s.started
                lines.append(Text(f" => {s.name} {t:5.1f}s", style="bold cyan"))
                if s.reason:
                    lines.append(Text(f"    not cached: {s.reason}", style="dim"))
                for line in s.tail:
                    lines.append(Text(f"    {line}", style="dim"))
            elif s.state == "done":
                lines.append(Text(f" => {s.name} {s.seconds:5.1f}s", style="green"))
            elif s.state == "failed":
                lines.append(Text(f" => ERROR {s.name}", style="bold red"))
        return Group(*lines)

    def close(self) -> None:
        self.live.update(self._render())
        self.live.stop()

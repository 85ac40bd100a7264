"""Typed progress events: what the solver reports, what the CLI renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VertexStarted:
    digest: str
    name: str


@dataclass(frozen=True, slots=True)
class VertexCached:
    digest: str
    name: str


@dataclass(frozen=True, slots=True)
class VertexLog:
    digest: str
    name: str
    data: str


@dataclass(frozen=True, slots=True)
class VertexDone:
    digest: str
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class VertexMiss:
    """Why a step was not cached (a short human sentence)."""

    digest: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class VertexFailed:
    digest: str
    name: str
    error: str


@dataclass(frozen=True, slots=True)
class CheckWarning:
    """A build check the Dockerfile failed (BuildKit's lint rules): buildx prints
    `WARN: <short>` as the build goes and a summary at its end."""

    rule: str  # e.g. "StageNameCasing"; "" for a warning that is no lint rule
    short: str  # `Rule: message (line N)`
    description: str = ""
    url: str = ""
    filename: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class Notice:
    """A one-off message (warnings, chosen snapshotter, ...)."""

    text: str
    level: str = "info"


Event = (VertexStarted | VertexCached | VertexLog | VertexDone | VertexMiss | VertexFailed
         | CheckWarning | Notice)
EventSink = Callable[[Event], None]


def discard(event: Event) -> None:
    """An EventSink that drops everything."""

"""The per-step log cap, as BuildKit applies it (util/progress/logs/logs.go).

A step's output is kept up to the limit (2 MiB by default, BUILDKIT_STEP_LOG_MAX_SIZE
there, `HistoryOptions.step_log_limit` here; -1 = no limit); the write that crosses it is
cut and followed by "[output clipped, log limit 2MiB reached]". What comes after is not
recorded, except its last 256 KiB, which is added when the step ends, so the end of a long
log (where the error usually is) survives.
"""

from __future__ import annotations

DEFAULT_STEP_LOG_LIMIT = 2 * 1024 * 1024
TAIL_KEEP = 256 * 1024


def format_limit(n: int) -> str:
    """Bytes as BuildKit's `%#g` of units.Bytes prints them: 2MiB, 1.5KiB, 100B."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            text = f"{value:.6g}"
            return f"{text}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover


def clip_marker(limit: int) -> str:
    return f"\n[output clipped, log limit {format_limit(limit)} reached]\n"


def _cut(data: bytes, n: int) -> str:
    return data[:n].decode("utf-8", "ignore")


class StepLog:
    """What to record of one step's output, chunk by chunk."""

    __slots__ = ("clipped", "limit", "size", "tail")

    def __init__(self, limit: int = DEFAULT_STEP_LOG_LIMIT) -> None:
        self.limit = limit
        self.size = 0
        self.clipped = False
        self.tail = bytearray()

    def feed(self, text: str) -> str:
        if self.limit < 0:
            return text
        if self.clipped:
            self.tail += text.encode("utf-8", "replace")
            if len(self.tail) > 2 * TAIL_KEEP:
                del self.tail[:len(self.tail) - TAIL_KEEP]
            return ""
        data = text.encode("utf-8", "replace")
        room = self.limit - self.size
        self.size += len(data)
        if len(data) <= room:
            return text
        self.clipped = True
        self.tail += data[room:]
        return _cut(data, room) + clip_marker(self.limit)

    def flush(self) -> str:
        """The kept end of what was clipped (once, when the step ends)."""
        if not self.tail:
            return ""
        data = bytes(self.tail[-TAIL_KEEP:])
        self.tail = bytearray()
        return data.decode("utf-8", "ignore")

"""Sizes and durations as people write them on command lines (`10GB`, `24h`)."""

from __future__ import annotations

import re

from pybuild.errors import UserError

_SIZE = re.compile(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*")
_DURATION = re.compile(r"\s*([0-9.]+)\s*([smhd]?)\s*")


def parse_size(text: str) -> int:
    """`10GB`, `512MiB`, `1e9` -> bytes."""
    m = _SIZE.fullmatch(text.lower())
    if not m:
        raise UserError(f"invalid size {text!r}: use e.g. 10GB or 512MiB")
    base = 1024 if m.group(3) else 1000
    power = " kmgt".index(m.group(2) or " ")
    try:
        return int(float(m.group(1)) * base**power)
    except ValueError:
        raise UserError(f"invalid size {text!r}: use e.g. 10GB or 512MiB") from None


def parse_duration(text: str) -> float:
    """`24h`, `90m`, `7d`, `3600s` -> seconds."""
    m = _DURATION.fullmatch(text.lower())
    if not m:
        raise UserError(f"invalid duration {text!r}: use e.g. 24h, 90m or 7d")
    try:
        return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    except ValueError:
        raise UserError(f"invalid duration {text!r}: use e.g. 24h, 90m or 7d") from None


def human_size(n: int) -> str:
    """Bytes as `docker images` shows them (decimal units)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"

"""Sizes and durations as people write them on command lines (`10GB`, `24h`)."""

from __future__ import annotations

import re

from pybuild.errors import UserError

_SIZE = re.compile(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*")
_DURATION = re.compile(r"\s*([0-9.]+)\s*([smhd]?)\s*")
_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$")


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


def parse_ram_size(text: str, *, flag: str = "size") -> int:
    """docker's `RAMInBytes` (`--shm-size 64m`): binary units, `b` and `i` optional."""
    m = _RAM.fullmatch(text.strip().lower())
    if not m:
        raise UserError(f"invalid {flag} {text!r}: use e.g. 64m or 1g")
    power = " kmgtp".index(m.group(2) or " ")
    try:
        return int(float(m.group(1)) * 1024**power)
    except ValueError:
        raise UserError(f"invalid {flag} {text!r}: use e.g. 64m or 1g") from None


def docker_size(n: int | float) -> str:
    """go-units `HumanSizeWithPrecision(n, 3)`, as docker's tables show sizes (`2.13MB`)."""
    size = float(n)
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def human_duration(seconds: float) -> str:
    """go-units `HumanDuration` (`2 hours`, `About a minute`), as docker's CREATED."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"

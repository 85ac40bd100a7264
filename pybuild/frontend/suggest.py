"""'Did you mean …?' suggestions (BuildKit's `util/suggest`), shared by every layer that
rejects a name: instructions, flags, mount options, stage and target names."""

from __future__ import annotations

from collections.abc import Iterable


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(value: str, options: Iterable[str], *, case_sensitive: bool = True) -> str | None:
    """BuildKit's `suggest.WrapErrorMaybe`: the closest option at distance < 3, or None
    (also None on an exact match: the error was then about something else)."""
    orig = value
    if not case_sensitive:
        value = value.lower()
    match: str | None = None
    best = 3
    for opt in options:
        cmp = opt if case_sensitive else opt.lower()
        if cmp == value:
            return None
        dist = levenshtein(value, cmp)
        if dist < best:
            best = dist
            if case_sensitive:
                match = opt
            elif orig == orig.lower():
                match = cmp.lower()
            elif orig == orig.upper():
                match = cmp.upper()
            else:
                match = cmp
    return match


def with_suggestion(message: str, value: str, options: Iterable[str], *,
                    case_sensitive: bool = True) -> str:
    match = suggest(value, options, case_sensitive=case_sensitive)
    return f"{message} (did you mean {match}?)" if match else message

"""Keeping secrets out of build records.

Two rules, applied to everything a record stores (the request, vertex names, logs,
errors, notices):
- build arguments named by the caller, or whose name looks like a secret by BuildKit's
  `SecretsUsedInArgOrEnv` rule (dockerfile2llb/validations.go: a word `apikey`, `auth`,
  `credential(s)`, `key`, `password`, `pword`, `passwd`, `secret` or `token`, and none of
  `public`, `file`, `version`), are recorded by name only;
- every secret value (the contents of `--secret` sources, the values of those arguments) is
  replaced by `****` wherever it appears, also across log chunks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

MASK = "****"
# Shorter values would mask ordinary text everywhere ("1", "yes"); they are still never
# recorded as argument values (those are dropped by name).
MIN_SCRUB_LENGTH = 4
_MAX_SECRET_FILE = 1 << 20

_DENY = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|"
                   r"passwd|secret|token)(?:_|$)")
_ALLOW = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]*@")


def looks_secret(name: str) -> bool:
    """BuildKit's SecretsUsedInArgOrEnv test of an ARG/ENV name."""
    return bool(_DENY.search(name)) and not _ALLOW.search(name)


def read_secret_values(secrets: Sequence[tuple[str, str, str]],
                       environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values of `--secret` sources as a build request carries them: (id, "file" |
    "env", path or variable). Unreadable files give nothing (the build reports them)."""
    out: list[str] = []
    for _sid, kind, where in secrets:
        if kind == "env":
            value = environ.get(where, "")
        else:
            try:
                with open(os.path.expanduser(where), "rb") as f:
                    value = f.read(_MAX_SECRET_FILE).decode("utf-8", "replace")
            except OSError:
                continue
        out.append(value)
    return tuple(out)


class Redactor:
    """Scrubs known secret values (and URL passwords) from text."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        needles: set[str] = set()
        for value in values:
            for candidate in (value, value.strip(), *value.splitlines()):
                candidate = candidate.strip("\r\n")
                if len(candidate) >= MIN_SCRUB_LENGTH:
                    needles.add(candidate)
        # Longest first, so a secret containing another is masked whole.
        self.needles: tuple[str, ...] = tuple(sorted(needles, key=len, reverse=True))
        self.longest = max((len(n) for n in self.needles), default=0)

    def __call__(self, text: str) -> str:
        for needle in self.needles:
            if needle in text:
                text = text.replace(needle, MASK)
        if "://" in text:
            text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
        return text

    def held_back(self, text: str) -> int:
        """How many characters at the end of `text` could begin a secret that the next
        chunk completes (they must wait for it)."""
        best = 0
        for needle in self.needles:
            first = needle[0]
            pos = text.find(first, max(0, len(text) - len(needle) + 1))
            while pos != -1 and len(text) - pos > best:
                if needle.startswith(text[pos:]):
                    best = len(text) - pos
                    break
                pos = text.find(first, pos + 1)
        return best


class StreamScrubber:
    """Scrubs a stream that arrives in chunks: a secret split across two chunks is still
    masked, because a tail that could start one is held back until the next chunk."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.pending = ""

    def feed(self, chunk: str) -> str:
        if not self.redactor.needles:
            return self.redactor(chunk) if "://" in chunk else chunk
        text = self.redactor(self.pending + chunk)
        keep = self.redactor.held_back(text)
        self.pending = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep] if keep else text

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return self.redactor(text)


def split_build_args(build_args: Iterable[tuple[str, str]], redact: Iterable[str]
                     ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]:
    """(kept args, names of the dropped ones, the dropped values)."""
    named = set(redact)
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    values: list[str] = []
    for key, value in build_args:
        if key in named or looks_secret(key):
            dropped.append(key)
            values.append(value)
        else:
            kept.append((key, value))
    return tuple(kept), tuple(dropped), tuple(values)

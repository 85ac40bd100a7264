"""Go string helpers the Dockerfile parser needs to match BuildKit byte for byte.

Go strings are byte strings. pybuild decodes Dockerfiles as UTF-8 with
``surrogateescape``, so an invalid byte ``0xNN`` appears as the lone surrogate
``U+DCNN``. The helpers here treat such a character the way Go treats the raw
byte (a ``utf8.RuneError`` that is neither a space nor printable).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# unicode.IsSpace: Latin-1 spaces plus the White_Space property above U+00FF.
GO_SPACES = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_GO_SPACE_SET = frozenset(GO_SPACES)

# Printable ASCII without `"` and `\`: strconv.Quote copies these unchanged.
_QUOTE_SAFE = re.compile(r"[ !#-\[\]-~]*\Z")
_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_isspace(ch: str) -> bool:
    """unicode.IsSpace for one character (an escaped byte is never a space)."""
    return ch in _GO_SPACE_SET


def go_trimspace(s: str) -> str:
    """strings.TrimSpace."""
    return s.strip(GO_SPACES)


def go_trimleft_space(s: str) -> str:
    """strings.TrimLeftFunc(s, unicode.IsSpace)."""
    return s.lstrip(GO_SPACES)


def go_lower(s: str) -> str:
    """strings.ToLower: simple per-rune mapping; invalid bytes become U+FFFD."""
    if s.isascii():
        return s.lower()
    return "".join(_lower_rune(c) for c in s)


@lru_cache(maxsize=1024)
def _lower_rune(c: str) -> str:
    if "\ud800" <= c <= "\udfff":
        return "\ufffd"
    low = c.lower()
    if len(low) == 1:
        return low
    # Python applies the full (multi-rune) mapping for U+0130; Go's is simple.
    return "i" if c == "\u0130" else c


@lru_cache(maxsize=4096)
def go_isprint(c: str) -> bool:
    """strconv.IsPrint: letters, marks, numbers, punctuation, symbols, ' '."""
    return c == " " or unicodedata.category(c)[0] in "LMNPS"


def go_quote(s: str) -> str:
    """strconv.Quote (also what fmt's %q prints for a string)."""
    if _QUOTE_SAFE.match(s):
        return '"' + s + '"'
    out = ['"']
    for c in s:
        out.append(_quote_rune(c))
    out.append('"')
    return "".join(out)


def _quote_rune(c: str) -> str:
    short = _SHORT_ESCAPES.get(c)
    if short is not None:
        return short
    o = ord(c)
    if 0xD800 <= o <= 0xDFFF:
        # An escaped raw byte (or a stray surrogate): Go prints each byte as \xNN.
        raw = c.encode("utf-8", "surrogateescape" if o >= 0xDC80 else "surrogatepass")
        return "".join(f"\\x{b:02x}" for b in raw)
    if o < 0x80:
        return c if 0x20 <= o < 0x7F else f"\\x{o:02x}"
    if go_isprint(c):
        return c
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def go_quote_list(items: list[str]) -> str:
    """fmt's %q applied to a []string: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def runes(s: str) -> str:
    """What ranging over a Go string yields: each invalid byte becomes U+FFFD."""
    if s.isascii():
        return s
    return _SURROGATES.sub("\ufffd", s)


_SURROGATES = re.compile("[\ud800-\udfff]")


def to_bytes(s: str) -> bytes:
    """The Go bytes behind a decoded string."""
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def from_bytes(b: bytes) -> str:
    """Decode Go bytes the way pybuild represents them."""
    return b.decode("utf-8", "surrogateescape")


def normalize(s: str) -> str:
    """Re-join byte sequences that were decoded in pieces (e.g. across lines)."""
    if s.isascii() or not _SURROGATES.search(s):
        return s
    return from_bytes(to_bytes(s))

"""Go standard-library behaviour that several components must match exactly.

BuildKit's word expansion (frontend) and ignore-file matching (context) are written
against Go's `unicode`, `strconv` and `path/filepath`; Python's equivalents differ in
corner cases (what counts as whitespace, how `//a` is cleaned). Core, so that both can
import it without importing each other.
"""

from __future__ import annotations

import unicodedata

# Go's unicode.IsSpace: the Latin-1 spaces plus the White_Space property.
# Python's str.isspace() also accepts U+001C..U+001F, which Go does not.
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def is_space(ch: str) -> bool:
    """Go `unicode.IsSpace` for one character."""
    return ch in _GO_SPACE


def trim_space(s: str) -> str:
    """Go `strings.TrimSpace`."""
    start, end = 0, len(s)
    while start < end and s[start] in _GO_SPACE:
        start += 1
    while end > start and s[end - 1] in _GO_SPACE:
        end -= 1
    return s[start:end]


def _is_print(ch: str) -> bool:
    # Go strconv.IsPrint: letters, marks, numbers, punctuation, symbols, ASCII space.
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def quote(s: str) -> str:
    """Go `strconv.Quote` / `fmt`'s `%q` for a string."""
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif _is_print(ch):
            out.append(ch)
        elif ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        else:
            cp = ord(ch)
            if cp < 0x20 or cp == 0x7F:
                out.append(f"\\x{cp:02x}")
            elif 0xD800 <= cp <= 0xDFFF:
                out.append("\\ufffd")  # not a valid rune in Go
            elif cp < 0x10000:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def clean_path(path: str) -> str:
    """Go `path/filepath.Clean` on a Unix host (`posixpath.normpath` keeps `//a`)."""
    if not path:
        return "."
    rooted = path[0] == "/"
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp != "..":
            parts.append(comp)
        elif parts and parts[-1] != "..":
            parts.pop()
        elif not rooted:
            parts.append("..")
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def dir_path(path: str) -> str:
    """Go `path/filepath.Dir` on a Unix host."""
    return clean_path(path[: path.rfind("/") + 1])

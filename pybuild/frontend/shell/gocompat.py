"""Small re-implementations of Go standard-library behaviour that BuildKit relies on.

BuildKit's word expansion and ignore-file matching are written against Go's
`unicode`, `strconv`, `path/filepath` and `regexp` packages; Python's
equivalents differ in corner cases (what counts as whitespace, how empty regex
matches are replaced, how `//a` is cleaned). Matching BuildKit exactly needs
the Go flavour of each.
"""

from __future__ import annotations

import re
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


def is_letter(ch: str) -> bool:
    """Go `unicode.IsLetter` (general category L*)."""
    return ch.isalpha()


def is_digit(ch: str) -> bool:
    """Go `unicode.IsDigit` (general category Nd only, unlike str.isdigit)."""
    return ch.isdecimal()


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


def _template_name(template: str) -> tuple[str, str] | None:
    """Go regexp's `extract`: the group name after a `$`, and the rest of the template."""
    brace = template.startswith("{")
    body = template[1:] if brace else template
    i = 0
    while i < len(body) and (is_letter(body[i]) or is_digit(body[i]) or body[i] == "_"):
        i += 1
    if i == 0:
        return None
    name = body[:i]
    if brace:
        if i >= len(body) or body[i] != "}":
            return None
        i += 1
    return name, body[i:]


def _expand_template(template: str, whole_match: str) -> str:
    """Go `Regexp.Expand` for a regex whose only group is group 0 (the whole match)."""
    out: list[str] = []
    while True:
        before, dollar, after = template.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if after.startswith("$"):
            out.append("$")
            template = after[1:]
            continue
        extracted = _template_name(after)
        if extracted is None:
            out.append("$")  # malformed: the `$` is literal text
            template = after
            continue
        name, template = extracted
        # Only `$0` / `${0}` names an existing group; Go rejects leading zeros.
        if name == "0":
            out.append(whole_match)


def regexp_replace_all(regex: re.Pattern[str], src: str, template: str) -> str:
    """Go `Regexp.ReplaceAllString`.

    Differs from `re.sub`: an empty match right after a previous match is not
    replaced, and `$0`/`${0}`/`$$` in the template are expanded the Go way.
    """
    out: list[str] = []
    last_end = 0
    search_pos = 0
    end = len(src)
    while search_pos <= end:
        m = regex.search(src, search_pos)
        if m is None:
            break
        start, stop = m.span()
        out.append(src[last_end:start])
        if stop > last_end or start == 0:
            out.append(_expand_template(template, m.group(0)))
        last_end = stop
        width = 1 if search_pos < end else 0
        if search_pos + width > stop:
            search_pos += width
        elif search_pos + 1 > stop:
            search_pos += 1
        else:
            search_pos = stop
    out.append(src[last_end:])
    return "".join(out)

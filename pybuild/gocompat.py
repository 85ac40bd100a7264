"""Go standard-library behaviour that BuildKit's parser, lexer and matchers rely on (the
frontend's word expansion, the build context's ignore patterns): core, so both can use it.

BuildKit is written against Go's `unicode`, `strings`, `strconv`, `path/filepath` and
`regexp`; Python's equivalents differ in corner cases (what counts as whitespace, how
empty regex matches are replaced, how `//a` is cleaned, how an invalid byte is quoted).
Matching BuildKit exactly needs the Go flavour of each, in one place.

Go strings are byte strings. pybuild decodes Dockerfiles as UTF-8 with
``surrogateescape``, so an invalid byte ``0xNN`` appears as the lone surrogate
``U+DCNN``. The helpers here treat such a character the way Go treats the raw
byte (a ``utf8.RuneError`` that is neither a space nor printable).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
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


def go_quote_list(items: Iterable[str]) -> str:
    """fmt's %q applied to a []string: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def runes(s: str) -> str:
    """What ranging over a Go string yields: each invalid byte becomes U+FFFD."""
    if s.isascii():
        return s
    return _SURROGATES.sub("\ufffd", s)


_SURROGATES = re.compile("[\ud800-\udfff]")


def has_invalid_utf8(s: str) -> bool:
    """Whether the Go bytes behind `s` are not valid UTF-8 (an escaped raw byte)."""
    return not s.isascii() and _SURROGATES.search(s) is not None


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

# Short names used by the shell lexer and the ignore-file matcher.
is_space = go_isspace
trim_space = go_trimspace
quote = go_quote


def is_letter(ch: str) -> bool:
    """Go `unicode.IsLetter` (general category L*)."""
    return ch.isalpha()


def is_digit(ch: str) -> bool:
    """Go `unicode.IsDigit` (general category Nd only, unlike str.isdigit)."""
    return ch.isdecimal()


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


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    orig = text
    if text in ("0", "+0", "-0"):
        return 0
    if not text:
        raise ValueError(f"time: invalid duration {go_quote(orig)}")
    sign = 1
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if not text:
        raise ValueError(f"time: invalid duration {go_quote(orig)}")
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)", text[pos:]):
                unit = re.match(r"(?:\d+(?:\.\d*)?|\.\d+)(\D*)", text[pos:])
                if unit and not unit.group(1):
                    raise ValueError(f"time: missing unit in duration {go_quote(orig)}")
                raise ValueError(f"time: unknown unit {go_quote(unit.group(1) if unit else '')} "
                                 f"in duration {go_quote(orig)}")
            raise ValueError(f"time: invalid duration {go_quote(orig)}")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if total > 2**63 - 1:
        raise ValueError(f"time: invalid duration {go_quote(orig)}")
    return sign * round(total)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def go_duration(ns: int) -> str:
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    out = ""
    if u < 1_000_000_000:
        for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < size * 1000:
                out = _frac(u, size) + unit
                break
    else:
        h, rem = divmod(u, 3_600_000_000_000)
        m, rem = divmod(rem, 60_000_000_000)
        out = _frac(rem, 1_000_000_000) + "s"
        if h or m:
            out = f"{m}m" + out
        if h:
            out = f"{h}h" + out
    return ("-" if neg else "") + out


def _frac(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def go_parse_bool(value: str) -> bool:
    """strconv.ParseBool (ValueError with Go's message)."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing {go_quote(value)}: invalid syntax")


# The names the build context's pattern matcher uses.
is_space = go_isspace
trim_space = go_trimspace
quote = go_quote

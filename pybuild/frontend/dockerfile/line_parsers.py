"""Per-instruction argument splitting (BuildKit ``line_parsers.go`` and
``split_command.go``).

Each parser takes the argument text of one instruction (flags removed) and
returns the values of the argument nodes plus whether JSON form was used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from pybuild.gocompat import (
    from_bytes,
    go_isspace,
    go_quote,
    go_trimleft_space,
    go_trimspace,
    runes,
    to_bytes,
)

# reWhitespace: the only separators for FROM/EXPOSE/ADD/COPY/VOLUME tokens.
WHITESPACE = re.compile(r"[\t\v\f\r ]+")
# unicode.IsSpace on a single byte (Go walks bytes in these two places).
_BYTE_SPACES = frozenset(b"\t\n\v\f\r \x85\xa0")
_ASCII_SPACES = "\t\n\v\f\r "
_MAX_JSON_DEPTH = 10000  # encoding/json's maxNestingDepth

ERR_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


class LineParseError(ValueError):
    """An instruction's arguments are malformed (message as BuildKit's)."""


Args = tuple[list[str], bool]
LineParser = Callable[[str, str], Args]


def split_command(line: str) -> tuple[str, list[str], str]:
    """``splitCommand``: keyword as written, flags, and the trimmed rest."""
    parts = WHITESPACE.split(go_trimspace(line), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = extract_builder_flags(parts[1])
    return parts[0], flags, go_trimspace(rest)


def extract_builder_flags(line: str) -> tuple[str, list[str]]:
    """``extractBuilderFlags``: leading ``--words`` become flags.

    Go walks bytes here, so each non-ASCII byte of a flag becomes its own
    Latin-1 character, and bytes 0x85/0xA0 count as spaces.
    """
    if line.isascii():
        head = line.lstrip(_ASCII_SPACES)
        if not head.startswith("--"):
            return head, []
    data = to_bytes(line)
    pos, flags = _scan_flags(data)
    return ("" if pos is None else from_bytes(data[pos:])), flags


def _scan_flags(line: bytes) -> tuple[int | None, list[str]]:
    """Returns where the arguments start (None: nothing left) and the flags."""
    n = len(line)
    words: list[str] = []
    word = bytearray()
    blank_ok = False
    pos = 0
    while pos < n:
        while pos < n and line[pos] in _BYTE_SPACES:
            pos += 1
        if pos == n:
            return None, words
        if line[pos] != 0x2D or pos + 1 == n or line[pos + 1] != 0x2D:
            return pos, words  # first word that is not a --flag
        quote = 0
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = 0
                    pos += 1
                    continue
            elif ch in _BYTE_SPACES:
                break
            elif ch in (0x22, 0x27):
                quote = ch
                blank_ok = True
                pos += 1
                continue
            if ch == 0x5C:  # the flag scanner always uses '\', whatever the escape
                if pos + 1 == n:
                    pos += 1
                    break
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
        text = word.decode("latin-1")
        if text == "--":
            return (pos if pos < n else None), words
        if blank_ok or word:
            words.append(text)
        word = bytearray()
        blank_ok = False
    return None, words


def parse_words(rest: str, escape: str) -> list[str]:
    """``parseWords``: split on whitespace outside quotes; quotes and escapes
    stay in the words (the escape is inert inside single quotes)."""
    words: list[str] = []
    buf: list[str] = []
    blank_ok = False
    quote = ""
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if pos + 1 == n:
                    break  # a trailing escape is dropped
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
        elif go_isspace(ch):
            if blank_ok or buf:
                words.append(runes("".join(buf)))
            buf = []
            blank_ok = False
        else:
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == escape:
                if pos + 1 == n:
                    break
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
        pos += 1
    if blank_ok or buf:
        words.append(runes("".join(buf)))
    return words


def parse_ignore(rest: str, escape: str) -> Args:
    """Unknown instructions: a single empty argument node."""
    return [""], False


def parse_string(rest: str, escape: str) -> Args:
    return ([rest] if rest else []), False


def parse_whitespace_delimited(rest: str, escape: str) -> Args:
    return (WHITESPACE.split(rest) if rest else []), False


def parse_maybe_json(rest: str, escape: str) -> Args:
    """RUN, CMD, ENTRYPOINT, SHELL: JSON array, else one shell-form node."""
    if not rest:
        return [], False
    values = parse_json(rest)
    if values is not None:
        return values, True
    return [rest], False


def parse_maybe_json_to_list(rest: str, escape: str) -> Args:
    """ADD, COPY, VOLUME: JSON array, else whitespace-separated tokens."""
    values = parse_json(rest)
    if values is not None:
        return values, True
    return parse_whitespace_delimited(rest, escape)


def parse_health_config(rest: str, escape: str) -> Args:
    """HEALTHCHECK: the type word, then the rest as for CMD (byte-wise split)."""
    data = to_bytes(rest)
    n = len(data)
    sep = 0
    while sep < n and data[sep] not in _BYTE_SPACES:
        sep += 1
    if sep == 0:
        return [], False
    nxt = sep
    while nxt < n and data[nxt] in _BYTE_SPACES:
        nxt += 1
    values, is_json = parse_maybe_json(from_bytes(data[nxt:]), escape)
    return [from_bytes(data[:sep]), *values], is_json


def parse_env(rest: str, escape: str) -> Args:
    return _parse_name_val(rest, "ENV", escape), False


def parse_label(rest: str, escape: str) -> Args:
    return _parse_name_val(rest, "LABEL", escape), False


def parse_name_or_name_val(rest: str, escape: str) -> Args:
    """ARG: one node per quote-aware word, ``=`` kept inside."""
    return parse_words(rest, escape), False


def _parse_name_val(rest: str, key: str, escape: str) -> list[str]:
    """ENV/LABEL: (key, value, separator) triples in either syntax."""
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise LineParseError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise LineParseError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        name, value = word.split("=", 1)
        out += [name, value, "="]
    return out


class _JSONOverflow(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(name)  # NaN / Infinity are not JSON for Go


def _check_number(text: str) -> None:
    if math.isinf(float(text)):
        raise _JSONOverflow(text)  # Go's decoder reports out-of-range numbers


def parse_json(rest: str) -> list[str] | None:
    """``parseJSON``: the strings of a JSON array, or None if ``rest`` is not
    valid JSON starting with ``[``. A valid array holding anything but strings
    raises :class:`LineParseError`."""
    rest = go_trimleft_space(rest)
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(
            rest,
            parse_constant=_reject_constant,
            parse_float=_check_number,
            parse_int=_check_number,
        )
    except RecursionError:
        return _deep_json(rest)
    except (ValueError, _JSONOverflow):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise LineParseError(ERR_NOT_STRING_ARRAY)
    # Go's decoder turns invalid UTF-8 and lone surrogate escapes into U+FFFD.
    return [runes(item) for item in value]


def _deep_json(rest: str) -> list[str] | None:
    """Too deep for Python's decoder: validate like Go; a valid document this
    deep necessarily holds a non-string element."""
    valid, overflow = _go_json_scan(rest)
    if not valid or overflow:
        return None
    raise LineParseError(ERR_NOT_STRING_ARRAY)


_JSON_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"')
_JSON_SCALAR = re.compile(
    r'(?P<str>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")'
    r"|(?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|true|false|null"
)


def _go_json_scan(s: str) -> tuple[bool, bool]:
    """Iterative JSON syntax check with Go's depth limit: (valid, overflow)."""
    n = len(s)
    stack: list[str] = []
    overflow = False
    need = "value"  # value | item | key | key_or_close | colon | next | end
    pos = 0
    while True:
        pos = _skip_json_ws(s, pos)
        if need == "end":
            return pos == n, overflow
        if pos >= n:
            return False, overflow
        c = s[pos]
        if (need == "item" and c == "]") or (need == "key_or_close" and c == "}"):
            stack.pop()
            pos += 1
            need = "next" if stack else "end"
        elif need in ("value", "item"):
            if c in "[{":
                stack.append(c)
                if len(stack) > _MAX_JSON_DEPTH:
                    return False, overflow
                pos += 1
                need = "item" if c == "[" else "key_or_close"
                continue
            m = _JSON_SCALAR.match(s, pos)
            if m is None:
                return False, overflow
            if m.lastgroup == "num" and math.isinf(float(m.group())):
                overflow = True
            pos = m.end()
            need = "next" if stack else "end"
        elif need in ("key", "key_or_close"):
            m = _JSON_STRING.match(s, pos)
            if m is None:
                return False, overflow
            pos = m.end()
            need = "colon"
        elif need == "colon":
            if c != ":":
                return False, overflow
            pos += 1
            need = "value"
        elif c == ("]" if stack[-1] == "[" else "}"):
            stack.pop()
            pos += 1
            need = "next" if stack else "end"
        elif c == ",":
            pos += 1
            need = "value" if stack[-1] == "[" else "key"
        else:
            return False, overflow


def _skip_json_ws(s: str, pos: int) -> int:
    n = len(s)
    while pos < n and s[pos] in " \t\n\r":
        pos += 1
    return pos


DISPATCH: dict[str, LineParser] = {
    "add": parse_maybe_json_to_list,
    "arg": parse_name_or_name_val,
    "cmd": parse_maybe_json,
    "copy": parse_maybe_json_to_list,
    "entrypoint": parse_maybe_json,
    "env": parse_env,
    "expose": parse_whitespace_delimited,
    "from": parse_whitespace_delimited,
    "healthcheck": parse_health_config,
    "label": parse_label,
    "maintainer": parse_string,
    "run": parse_maybe_json,
    "shell": parse_maybe_json,
    "stopsignal": parse_string,
    "user": parse_string,
    "volume": parse_maybe_json_to_list,
    "workdir": parse_string,
}

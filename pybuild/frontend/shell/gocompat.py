"""Small re-implementations of Go standard-library behaviour that BuildKit relies on.

BuildKit's word expansion and ignore-file matching are written against Go's
`unicode`, `strconv`, `path/filepath` and `regexp` packages; Python's
equivalents differ in corner cases (what counts as whitespace, how empty regex
matches are replaced, how `//a` is cleaned). Matching BuildKit exactly needs
the Go flavour of each.
"""

from __future__ import annotations

import re

# moved to pybuild/gocompat.py (the context package needs them too); re-exported here
from pybuild.gocompat import clean_path, dir_path, is_space, quote, trim_space

__all__ = ["clean_path", "dir_path", "is_digit", "is_letter", "is_space", "quote",
           "regexp_replace_all", "trim_space"]


def is_letter(ch: str) -> bool:
    """Go `unicode.IsLetter` (general category L*)."""
    return ch.isalpha()


def is_digit(ch: str) -> bool:
    """Go `unicode.IsDigit` (general category Nd only, unlike str.isdigit)."""
    return ch.isdecimal()


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

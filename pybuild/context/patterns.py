""".dockerignore patterns and the wildcard tests of COPY sources, with BuildKit's semantics.

- `PatternMatcher` is moby/patternmatcher's matcher: each pattern is cleaned,
  validated with Go's `filepath.Match` rules, then compiled the way
  `Pattern.compile` does (exact / prefix / suffix string checks, else a regex
  where `*` and `?` never cross `/` and `**` spans directories).
- `PatternMatcher.matches` answers what BuildKit's context walker
  (tonistiigi/fsutil `filterFS.Walk`, via `MatchesUsingParentResults`)
  decides for a path: the last matching pattern wins, and a pattern that
  matched a parent directory counts as matching everything below it.

Paths are relative to the context root and use `/` separators. Reading ignore files is
`context.dockerignore`'s.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable

from pybuild.errors import UserError
from pybuild.gocompat import clean_path, dir_path, quote, trim_space

__all__ = ["DockerignoreError", "PatternMatcher", "has_wildcards", "include_matcher",
           "is_literal_path"]

BOM = "\ufeff"
_EXACT, _PREFIX, _SUFFIX, _REGEXP = "exact", "prefix", "suffix", "regexp"
_SHOULD_ESCAPE = frozenset(".+()|{}$")  # regex-special but literal in filepath.Match
_FSUTIL_PATTERN_CHARS = frozenset("*[]?^\\")  # fsutil: an exception that may match anywhere


class DockerignoreError(UserError):
    """An invalid ignore pattern (a lone `!`, or bad `filepath.Match` syntax)."""

    code = "dockerignore"


def _bad_pattern(pattern: str) -> DockerignoreError:
    return DockerignoreError(f"syntax error in pattern {quote(pattern)}")


# -- COPY sources -----------------------------------------------------------------------


def has_wildcards(name: str) -> bool:
    """BuildKit's `containsWildcards`: a `*`, `?` or `[` not escaped by a backslash, i.e.
    whether a COPY source is a pattern rather than a path."""
    i = 0
    while i < len(name):
        if name[i] == "\\":
            i += 2
            continue
        if name[i] in "*?[":
            return True
        i += 1
    return False


def is_literal_path(name: str) -> bool:
    """No pattern syntax at all (no `*`, `?`, `[` and no escaping backslash): the text is
    the path itself, so a walk may start from it."""
    return not any(c in "*?[\\" for c in name)


def include_matcher(patterns: Iterable[str]) -> PatternMatcher:
    """The include patterns of a `COPY --parents` (fsutil's IncludePatterns); an empty
    one (`a/./`) means everything."""
    return PatternMatcher(["**" if p.strip("/") in ("", ".") else p for p in patterns]
                          or ["**"])


# -- Go filepath.Match, used (as upstream does) only to validate pattern syntax -----------


class _BadPatternError(Exception):
    pass


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise _BadPatternError
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPatternError
    rest = chunk[1:]
    if not rest:
        raise _BadPatternError
    return chunk[0], rest


def _match_class(chunk: str, r: str, failed: bool) -> tuple[str, bool]:
    """One `[...]` item (the `[` already removed); returns the rest and whether it failed."""
    negated = chunk.startswith("^")
    if negated:
        chunk = chunk[1:]
    matched = False
    ranges = 0
    while True:
        if chunk.startswith("]") and ranges > 0:
            chunk = chunk[1:]
            break
        lo, chunk = _get_esc(chunk)
        hi = lo
        if chunk[0] == "-":
            hi, chunk = _get_esc(chunk[1:])
        if not failed and lo <= r <= hi:
            matched = True
        ranges += 1
    return chunk, failed or matched == negated


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    # After a mismatch Go keeps scanning the chunk, so syntax errors are always found.
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk, failed = _match_class(chunk[1:], r, failed)
            continue
        if c == "?":
            if not failed:
                failed = s[0] == "/"
                s = s[1:]
            chunk = chunk[1:]
            continue
        if c == "\\":
            chunk = chunk[1:]
            if not chunk:
                raise _BadPatternError
        if not failed:
            failed = chunk[0] != s[0]
            s = s[1:]
        chunk = chunk[1:]
    return ("", False) if failed else (s, True)


def _filepath_match(pattern: str, name: str) -> bool:
    """Go `path/filepath.Match` on a Unix host; raises _BadPatternError."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * matches the rest unless it has a /
        rest, ok = _match_chunk(chunk, name)
        if ok and (not rest or pattern):
            name = rest
            continue
        skipped = _star_skip(chunk, name, pattern) if star else None
        if skipped is not None:
            name = skipped
            continue
        while pattern:  # fail, but only after checking the rest of the pattern's syntax
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def _star_skip(chunk: str, name: str, pattern: str) -> str | None:
    """Let a `*` absorb 1..n characters (never `/`) before `chunk` matches."""
    i = 0
    while i < len(name) and name[i] != "/":
        rest, ok = _match_chunk(chunk, name[i + 1 :])
        if ok and (pattern or not rest):
            return rest
        i += 1
    return None


# -- patternmatcher.Pattern ------------------------------------------------------


def _py_escape(ch: str) -> str | None:
    """Python spelling of Go regexp escape `\\<ch>`; None if Python cannot express it."""
    if ch == "z":
        return r"\Z"  # Go's end of text
    if ch == "Z":
        return None  # not valid Go syntax
    return "\\" + ch  # Python rejects what it does not know (\p, \Q...)


def _compile(pattern: str) -> tuple[str, str | None, str | None]:
    """Go `Pattern.compile`: (match type, Go regexp source, Python regex for fullmatch).

    The Go source is kept for comparison with upstream's tests. The Python
    regex is None when it cannot be written (the pattern is then invalid).
    """
    go: list[str] = ["^"]
    py: list[str | None] = []
    kind = _EXACT
    n = len(pattern)
    pos = 1 if pattern.startswith(BOM) else 0  # Go's text/scanner skips a leading BOM
    first = True
    while pos < n:
        ch = pattern[pos]
        pos += 1
        if ch == "*" and pos < n and pattern[pos] == "*":
            pos += 1
            if pos < n and pattern[pos] == "/":
                pos += 1  # `**/` is read as `**`
            if pos < n:
                go.append("(.*/)?")
                py.append("(?:.*/)?")
                kind = _REGEXP
            elif kind == _EXACT:
                kind = _PREFIX  # `dir/**`: a plain prefix test
            else:
                go.append(".*")
                py.append(".*")
                kind = _REGEXP
            if first:
                kind = _SUFFIX  # `**...`: a plain suffix test (unless wildcards follow)
        elif ch in ("*", "?"):
            piece = "[^/]*" if ch == "*" else "[^/]"
            go.append(piece)
            py.append(piece)
            kind = _REGEXP
        elif ch in _SHOULD_ESCAPE:
            go.append("\\" + ch)
            py.append("\\" + ch)
        elif ch == "\\":
            if pos < n:
                go.append("\\" + pattern[pos])
                py.append(_py_escape(pattern[pos]))
                pos += 1
                kind = _REGEXP
            else:
                go.append("\\")
                py.append(None)  # rejected by validation before we get here
        else:
            if ch in ("[", "]"):
                kind = _REGEXP
            go.append(ch)
            py.append(ch)
        first = False
    if kind != _REGEXP:
        return kind, None, None
    go.append("$")
    py_source = None if None in py else "".join(p for p in py if p is not None)
    return kind, "".join(go), py_source


def _try_compile(source: str | None) -> re.Pattern[str] | None:
    if source is None:
        return None
    try:
        with warnings.catch_warnings():
            # "Possible nested set" and similar FutureWarnings: Go reads these literally too.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(source, re.ASCII)
    except re.error:
        return None


class _Pattern:
    """One compiled pattern (Go `patternmatcher.Pattern`)."""

    __slots__ = ("bad", "exclusion", "match_type", "py_source", "regexp", "test", "text")

    def __init__(self, text: str, *, exclusion: bool = False) -> None:
        self.text = text  # the cleaned pattern, without `!`
        self.exclusion = exclusion
        self.match_type, self.regexp, self.py_source = _compile(text)
        self.bad = False
        self.test = self._make_test()

    def _make_test(self) -> Callable[[str], object]:
        text = self.text
        if self.match_type == _EXACT:
            return text.__eq__
        if self.match_type == _PREFIX:
            prefix = text[:-2]  # strip the trailing **
            return lambda path: path.startswith(prefix)
        if self.match_type == _SUFFIX:
            suffix = text[2:]  # strip the leading **
            bare = suffix[1:] if suffix.startswith("/") else None  # **/foo matches "foo"
            return lambda path: path.endswith(suffix) or path == bare
        compiled = _try_compile(self.py_source)
        if compiled is None:
            self.bad = True
            return self._raise_bad
        return compiled.fullmatch

    def _raise_bad(self, path: str) -> object:
        # Upstream reports a regex that fails to compile on every match attempt.
        raise _bad_pattern(self.text)

    def matches(self, path: str) -> bool:
        return bool(self.test(path))

    def fullmatch_source(self) -> str:
        """This pattern as a Python regex for `fullmatch` (for the combined pre-check)."""
        text = self.text
        if self.match_type == _EXACT:
            return re.escape(text)
        if self.match_type == _PREFIX:
            return re.escape(text[:-2]) + "(?s:.*)"
        if self.match_type == _SUFFIX:
            suffix = text[2:]
            source = "(?s:.*)" + re.escape(suffix)
            if suffix.startswith("/"):
                source += "|" + re.escape(suffix[1:])
            return source
        assert self.py_source is not None
        return self.py_source

    def without_trailing_glob(self) -> str:
        """fsutil's `patternWithoutTrailingGlob`."""
        text = self.text.removesuffix("/**")
        return text.removesuffix("/*")


# -- the matcher ---------------------------------------------------------------------------

_MatchInfo = tuple[bool, ...]  # per pattern: did it match (Go's MatchInfo); () when unknown
# A directory's MatchInfo and the index of its last True entry (-1 if none).
_DirState = tuple[_MatchInfo, int]
_NO_PARENT: _DirState = ((), -1)


def _last_true(info: _MatchInfo) -> int:
    for i in range(len(info) - 1, -1, -1):
        if info[i]:
            return i
    return -1


class PatternMatcher:
    """Go `patternmatcher.PatternMatcher`, plus fsutil's walk-time decisions.

    Regexes are compiled once; per-directory match results are cached, so
    call it for many paths of the same tree. Not thread-safe (like upstream).
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns: list[_Pattern] = []
        self._exclusions = False
        for raw in patterns:
            self._add(raw)
        self._has_bad = any(p.bad for p in self._patterns)
        self._all_false: _MatchInfo = (False,) * len(self._patterns)
        self._only_prefix_exceptions = not any(
            p.exclusion and _FSUTIL_PATTERN_CHARS.intersection(p.without_trailing_glob())
            for p in self._patterns
        )
        # "Does any of patterns[start:] match?" as one regex, per start index.
        self._any_match_from: dict[int, Callable[[str], object] | None] = {}
        self._dir_states: dict[str, _DirState] = {}
        self._parent_states: dict[str, _DirState] = {}

    def _add(self, raw: str) -> None:
        pattern = trim_space(raw)
        if not pattern:
            return
        pattern = clean_path(pattern)
        exclusion = pattern[0] == "!"
        if exclusion:
            if len(pattern) == 1:
                raise DockerignoreError('illegal exclusion pattern: "!"')
            pattern = pattern[1:]
            self._exclusions = True
        try:
            _filepath_match(pattern, ".")
        except _BadPatternError:
            raise _bad_pattern(pattern) from None
        self._patterns.append(_Pattern(pattern, exclusion=exclusion))

    def _any_match(self, start: int) -> Callable[[str], object] | None:
        """A pre-check for patterns[start:]: most paths match no pattern at all,
        and one combined regex answers that without a Python loop."""
        try:
            return self._any_match_from[start]
        except KeyError:
            pass
        check: Callable[[str], object] | None = None
        if not self._has_bad:
            tail = self._patterns[start:]
            if not tail:
                check = _never
            else:
                source = "|".join(f"(?:{p.fullmatch_source()})" for p in tail)
                compiled = _try_compile(source)
                check = compiled.fullmatch if compiled is not None else None
        self._any_match_from[start] = check
        return check

    @property
    def exclusions(self) -> bool:
        """True if any pattern is an exception (`!...`)."""
        return self._exclusions

    @property
    def patterns(self) -> list[str]:
        """The cleaned patterns, exceptions prefixed with `!`."""
        return [("!" if p.exclusion else "") + p.text for p in self._patterns]

    # -- per-directory state (Go MatchInfo), as the walker carries it down ---------------

    def _match_info(self, path: str, parent: _MatchInfo) -> tuple[bool, _MatchInfo, int]:
        """Go `MatchesUsingParentResults(path, parent)`, in upstream's evaluation order.

        Also returns the index of the pattern that last set the result to
        "excluded" (-1 if none).
        """
        matched = False
        culprit = -1
        info: list[bool] = []
        append = info.append
        inherited_matches = parent or self._all_false
        for i, (pattern, inherited) in enumerate(
            zip(self._patterns, inherited_matches, strict=True)
        ):
            if inherited:
                match = True
            elif pattern.exclusion != matched:
                append(False)
                continue
            else:
                match = bool(pattern.test(path))
                if not match and not parent:
                    match = self._any_parent_matches(pattern, path)
            append(match)
            if match:
                matched = not pattern.exclusion
                culprit = i if matched else -1
        return matched, tuple(info), culprit

    @staticmethod
    def _any_parent_matches(pattern: _Pattern, path: str) -> bool:
        parent = dir_path(path)
        if parent == ".":
            return False
        parts = parent.split("/")
        for end in range(1, len(parts) + 1):
            try:
                if pattern.matches("/".join(parts[:end])):
                    return True
            except DockerignoreError:
                pass  # upstream ignores errors for parent checks
        return False

    def _dir_state(self, path: str, parent: _DirState) -> _DirState:
        check = self._any_match(0)
        if check is not None and not check(path):
            # No pattern matches the path itself: it inherits exactly its parent's matches.
            return (parent[0] or self._all_false, parent[1])
        info = self._match_info(path, parent[0])[1]
        return info, _last_true(info)

    def _dir_state_of(self, key: str) -> _DirState:
        """State of a cleaned directory path, computing missing ancestors first."""
        missing: list[str] = []
        current = key
        while current not in self._dir_states:
            missing.append(current)
            cut = current.rfind("/")
            if cut < 0:
                break
            current = current[:cut]
        for path in reversed(missing):
            cut = path.rfind("/")
            parent = self._dir_states[path[:cut]] if cut >= 0 else _NO_PARENT
            self._dir_states[path] = self._dir_state(path, parent)
        return self._dir_states[key]

    def _parent_state(self, path: str) -> _DirState:
        raw_parent = path[: path.rfind("/") + 1]
        state = self._parent_states.get(raw_parent)
        if state is None:
            parent = dir_path(path)
            state = _NO_PARENT if parent == "." else self._dir_state_of(parent)
            self._parent_states[raw_parent] = state
        return state

    # -- public queries ---------------------------------------------------------------

    def matches(self, rel_path: str) -> bool:
        """True if `rel_path` is excluded from the build context (BuildKit's walker).

        The last pattern matching the path, or matching one of its parent
        directories, decides. This equals upstream's ordered evaluation: the
        patterns it skips could only have re-applied the state it already had.
        """
        info, last_parent = self._parent_state(rel_path)
        check = self._any_match(last_parent + 1)
        if check is None:
            # Invalid pattern present: keep upstream's order so errors surface as they would.
            return self._match_info(rel_path, info)[0]
        patterns = self._patterns
        if check(rel_path):
            for i in range(len(patterns) - 1, last_parent, -1):
                if patterns[i].test(rel_path):
                    return not patterns[i].exclusion
        return last_parent >= 0 and not patterns[last_parent].exclusion

    def excluded_by(self, rel_path: str) -> str | None:
        """The pattern that excludes `rel_path`, or None if it is not excluded."""
        matched, _, culprit = self._match_info(rel_path, self._parent_state(rel_path)[0])
        return self._patterns[culprit].text if matched else None

    def matches_or_parent_matches(self, rel_path: str) -> bool:
        """Go `MatchesOrParentMatches` (used by BuildKit to open single paths)."""
        matched = False
        for pattern in self._patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.matches(rel_path) or self._any_parent_matches(pattern, rel_path):
                matched = not pattern.exclusion
        return matched

    def matches_exact(self, rel_path: str) -> bool:
        """Go `MatchesExact`: like `matches` but without any parent-directory matching."""
        matched = False
        for pattern in self._patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.matches(rel_path):
                matched = not pattern.exclusion
        return matched

    def can_skip_dir(self, rel_dir: str) -> bool:
        """True if the walker may prune `rel_dir` (fsutil's SkipDir decision).

        That is: the directory is excluded and no exception can re-include
        anything below it. When an exception contains wildcards, BuildKit
        walks every excluded directory, so this is then always False.
        """
        if not self.matches(rel_dir) or not self._only_prefix_exceptions:
            return False
        dir_slash = rel_dir + "/"
        return not any(
            p.exclusion and (p.without_trailing_glob() + "/").startswith(dir_slash)
            for p in self._patterns
        )


def _never(path: str) -> bool:
    return False

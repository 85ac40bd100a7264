"""Dockerfile shell-word processing: BuildKit's `frontend/dockerfile/shell/lex.go`.

Variable substitution, quote removal, escapes and word splitting, with the same
results and error messages as BuildKit's `shell.Lex`, including its quirks
(a leading byte-order mark is dropped, `${X` reports an "unsupported modifier",
`${v/pat/repl}` uses Go regexp replacement rules).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence

from pybuild import gocompat
from pybuild.errors import UserError

__all__ = ["ExpansionError", "ShellLex", "build_envs", "shell_pattern_to_regex"]

EnvInput = Mapping[str, str] | Sequence[str]

_EOF = ""  # what the scanner returns at the end of input
_BOM = "\ufeff"
_GO_EOF_RUNE = "\ufffd"  # how Go prints scanner.EOF via string(ch) or %c
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_REGEX_META = frozenset("[]{}.+()|^$")


class ExpansionError(UserError):
    """A word could not be expanded (bad substitution, unset `${X?}`, open quote...).

    `message` is BuildKit's full text, `failed to process "<word>": <reason>`;
    `reason` is the inner part (e.g. `FOO: custom error`).
    """

    code = "expansion"

    def __init__(self, reason: str, word: str | None = None) -> None:
        message = reason if word is None else f"failed to process {gocompat.quote(word)}: {reason}"
        super().__init__(message)
        self.reason = reason
        self.word = word


class _LexError(Exception):
    """Internal failure; wrapped into ExpansionError with the whole word."""


def build_envs(env: Sequence[str]) -> dict[str, str]:
    """Go `EnvsFromSlice`: `K=V` items (no `=` means an empty value); the last duplicate wins."""
    envs: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        envs[key] = value
    return envs


def _as_mapping(env: EnvInput) -> Mapping[str, str]:
    if isinstance(env, Mapping):
        return env
    if isinstance(env, str):
        raise TypeError("env must be a mapping or a sequence of 'K=V' strings, not str")
    return build_envs(env)


class ShellLex:
    """BuildKit's `shell.Lex`. Not safe for concurrent use of one instance's attributes."""

    def __init__(
        self,
        escape_token: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        if len(escape_token) != 1:
            raise ValueError(f"escape token must be one character, got {escape_token!r}")
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes  # keep quote characters in the output
        self.raw_escapes = raw_escapes  # keep escape characters in the output
        self.skip_process_quotes = skip_process_quotes  # quotes are ordinary characters
        self.skip_unset_env = skip_unset_env  # leave `$name` text alone when unset

    def process_word(self, word: str, env: EnvInput) -> str:
        """Go `ProcessWord`: one string, quotes removed, spaces kept."""
        result, _, _, _ = self._process(word, env, capture=True)
        return result

    def process_words(self, word: str, env: EnvInput) -> list[str]:
        """Go `ProcessWords`: expand, then split on unquoted whitespace."""
        _, words, _, _ = self._process(word, env, capture=False)
        return words

    def process_word_with_matches(self, word: str, env: EnvInput) -> tuple[str, set[str], set[str]]:
        """Go `ProcessWordWithMatches`: (result, names found, names looked up but unset)."""
        result, _, matched, unmatched = self._process(word, env, capture=True)
        return result, matched, unmatched

    def _process(
        self, word: str, env: EnvInput, *, capture: bool
    ) -> tuple[str, list[str], set[str], set[str]]:
        sw = _ShellWord(self, word, _as_mapping(env), capture=capture)
        try:
            result, words = sw.process_stop_on(_EOF, self.raw_escapes)
        except _LexError as exc:
            raise ExpansionError(str(exc), word) from None
        return result, words, sw.matches, sw.nonmatches


class _Scanner:
    """The two operations lex.go uses from Go's text/scanner (which skips a leading BOM)."""

    __slots__ = ("_pos", "_src")

    def __init__(self, src: str) -> None:
        # text/scanner decodes runes: an invalid byte reads as utf8.RuneError (U+FFFD), so
        # an expanded word never carries a byte that is not UTF-8 (values substituted from
        # the environment are inserted as they are).
        self._src = gocompat.runes(src)
        self._pos = 1 if src.startswith(_BOM) else 0

    def peek(self) -> str:
        return self._src[self._pos] if self._pos < len(self._src) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self._pos += 1
        return ch


class _Words:
    """Word-splitting state of one processStopOn call.

    `buf` is shared by every nesting level, exactly like upstream's
    `shellWord.wordsBuffer`: a nested `${x:-...}` clears the enclosing
    level's partial word.
    """

    __slots__ = ("buf", "in_word", "words")

    def __init__(self, buf: list[str]) -> None:
        self.buf = buf  # never holds empty strings, so truthiness == non-empty
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if gocompat.is_space(ch):
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf.clear()
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        if text:
            self.buf.append(text)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf.clear()
            self.in_word = False
        return self.words


class _ShellWord:
    """Processing state for one call (Go's `shellWord`)."""

    def __init__(self, lex: ShellLex, word: str, env: Mapping[str, str], *, capture: bool) -> None:
        self.lex = lex
        self.scanner = _Scanner(word)
        self.env = env
        self.capture = capture
        self.raw_escapes = lex.raw_escapes
        self.matches: set[str] = set()
        self.nonmatches: set[str] = set()
        self.words_buffer: list[str] = []

    # -- main loop -----------------------------------------------------------

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process until `stop` (consumed) or the end of input when `stop` is EOF."""
        self.words_buffer.clear()
        words = _Words(self.words_buffer)
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._scan(stop, words)
        finally:
            self.raw_escapes = saved

    def _special(self, ch: str) -> Callable[[], str] | None:
        if ch == "$":
            return self.process_dollar
        if self.lex.skip_process_quotes:
            return None
        if ch == "'":
            return self.process_single_quote
        if ch == '"':
            return self.process_double_quote
        return None

    def _scan(self, stop: str, words: _Words) -> tuple[str, list[str]]:
        sc = self.scanner
        result: list[str] = []
        while (ch := sc.peek()) != _EOF:
            if stop != _EOF and ch == stop:
                sc.next()
                return "".join(result), words.get_words()
            handler = self._special(ch)
            if handler is not None:
                text = handler()
                result.append(text)
                if ch == "$":
                    words.add_string(text)  # unquoted expansions are split
                else:
                    words.add_raw_string(text)
                continue
            ch = sc.next()
            if ch == self.lex.escape_token:
                if self.raw_escapes:
                    words.add_raw_char(ch)
                    result.append(ch)
                ch = sc.next()
                if ch == _EOF:
                    break  # a trailing escape is dropped
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop != _EOF:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    # -- quotes --------------------------------------------------------------

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        sc = self.scanner
        raw = self.lex.raw_quotes
        out: list[str] = []
        ch = sc.next()
        if raw:
            out.append(ch)
        while True:
            ch = sc.next()
            if ch == _EOF:
                raise _LexError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if raw:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def process_double_quote(self) -> str:
        # Literal except `$` expansions; the escape token only escapes `"`, `$` and itself.
        sc = self.scanner
        raw = self.lex.raw_quotes
        esc = self.lex.escape_token
        out: list[str] = []
        ch = sc.next()
        if raw:
            out.append(ch)
        while True:
            peeked = sc.peek()
            if peeked == _EOF:
                raise _LexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if peeked == '"':
                ch = sc.next()
                if raw:
                    out.append(ch)
                return "".join(out)
            if peeked == "$":
                out.append(self.process_dollar())
                continue
            ch = sc.next()
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                following = sc.peek()
                if following == _EOF:
                    continue  # ignore an escape at the end; the loop then reports EOF
                if following in ('"', "$", esc):
                    ch = sc.next()
            out.append(ch)

    # -- $ expansions ----------------------------------------------------------

    def process_dollar(self) -> str:
        sc = self.scanner
        sc.next()  # the `$`
        if sc.peek() != "{":
            return self._plain_variable()
        sc.next()  # the `{`
        first = sc.peek()
        if first == _EOF:
            raise _LexError("syntax error: missing '}'")
        if first in ("{", "}", ":"):
            raise _LexError("syntax error: bad substitution")
        name = self.process_name()
        ch = sc.next()
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == ":":
            modifier = sc.next()
            return self._modifier(name, modifier, ":" + (modifier or _GO_EOF_RUNE), True)
        if ch in ("+", "-", "?", "#", "%"):
            return self._modifier(name, ch, ch, False)
        if ch == "/":
            return self._substitute(name)
        raise _LexError(f"unsupported modifier ({ch or _GO_EOF_RUNE}) in substitution")

    def _plain_variable(self) -> str:
        name = self.process_name()
        if not name:
            return "$"
        value, found = self.get_env(name)
        if not found and self.lex.skip_unset_env:
            return "$" + name
        return value

    def _modifier(self, name: str, modifier: str, chs: str, null_is_unset: bool) -> str:
        """`${name<chs>word}` for the -, +, ?, #, % families (chs may start with `:`)."""
        trims = modifier in ("#", "%")
        if null_is_unset and trims:
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        word = self._stop_on_brace(raw_escapes=trims)
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + chs + word + "}"
        empty_as_unset = not is_set or (null_is_unset and value == "")
        if modifier == "-":
            return word if empty_as_unset else value
        if modifier == "+":
            return "" if empty_as_unset else word
        if modifier == "?":
            return self._required(name, value, is_set, null_is_unset, word)
        if trims:
            # A doubled operator (## / %%) removes the longest match instead of the shortest.
            greedy = word.startswith(modifier)
            if greedy:
                word = word[1:]
            if modifier == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _LexError(f"unsupported modifier ({chs}) in substitution")

    @staticmethod
    def _required(name: str, value: str, is_set: bool, null_is_unset: bool, word: str) -> str:
        if not is_set:
            raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
        if null_is_unset and value == "":
            raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
        return value

    def _stop_on_brace(self, *, raw_escapes: bool) -> str:
        try:
            word, _ = self.process_stop_on("}", raw_escapes)
        except _LexError:
            if self.scanner.peek() == _EOF:
                raise _LexError("syntax error: missing '}'") from None
            raise
        return word

    def _substitute(self, name: str) -> str:
        """`${name/pattern/replacement}` and `${name//pattern/replacement}`."""
        sc = self.scanner
        replace_all = sc.peek() == "/"
        if replace_all:
            sc.next()
        try:
            pattern, _ = self.process_stop_on("/", True)
        except _LexError:
            if sc.peek() == _EOF:
                raise _LexError("syntax error: missing '/' in ${}") from None
            raise
        replacement = self._stop_on_brace(raw_escapes=True)
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _compile_pattern(pattern, greedy=True, anchored=False)
        if replace_all:
            return gocompat.regexp_replace_all(regex, value, replacement)
        m = regex.search(value)
        if m is None:
            return value
        return value[: m.start()] + replacement + value[m.end() :]

    def process_name(self) -> str:
        """A name: a digit run, one special-parameter character, or [letters digits _]*."""
        sc = self.scanner
        name: list[str] = []
        while (ch := sc.peek()) != _EOF:
            if not name and gocompat.is_digit(ch):
                while (digit := sc.peek()) != _EOF and gocompat.is_digit(digit):
                    name.append(sc.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return sc.next()
            if not (gocompat.is_letter(ch) or gocompat.is_digit(ch) or ch == "_"):
                break
            name.append(sc.next())
        return "".join(name)

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is not None:
            if self.capture:
                self.matches.add(name)
            return value, True
        if self.capture:
            self.nonmatches.add(name)
        return "", False


# -- glob patterns of ${v#pat} ${v%pat} ${v/pat/repl} --------------------------------


def shell_pattern_to_regex(pattern: str, *, greedy: bool, anchored: bool) -> str:
    """Go `convertShellPatternToRegex`: `*` and `?` wildcards, `\\*` `\\?` `\\\\` literals.

    Returns the regular expression source, identical to Go's. Raises _LexError
    for an invalid escape.
    """
    sc = _Scanner(pattern)
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    while (tok := sc.next()) != _EOF:
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            # `}` and `/` are escaped only to get them past ${}; the escape is not part
            # of the pattern.
            if sc.peek() in ("}", "/"):
                continue
            out.append("\\")
            tok = sc.next()
            if tok not in ("*", "?", "\\"):
                raise _LexError(f"invalid escape '\\{tok or _GO_EOF_RUNE}'")
        elif tok in _REGEX_META:
            out.append("\\")
        out.append(tok)
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _compile_cached(source: str) -> re.Pattern[str]:
    return re.compile(source)


def _compile_pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    try:
        source = shell_pattern_to_regex(pattern, greedy=greedy, anchored=anchored)
    except _LexError as exc:
        raise _LexError(f"invalid pattern ({pattern}) in substitution: {exc}") from None
    # Every regex metacharacter was escaped above, so Python's `re` reads the
    # source exactly like Go's regexp package does.
    return _compile_cached(source)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _compile_pattern(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end() :] if m else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern, keeping each escape before the character it escapes."""
    out: list[str] = []
    i = 0
    last = len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            out.append(pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(reversed(out))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex cannot find the shortest rightmost match, so reverse both the
    # pattern and the value and look for a leftmost one (as upstream does).
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]

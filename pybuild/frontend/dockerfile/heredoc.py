"""Heredoc detection, as BuildKit's parser does it.

BuildKit finds heredocs by running its shell lexer (``shell.Lex``, always with
escape ``\\``) over the instruction line and matching each word against
``^(\\d*)<<(-?)\\s*([^<]*)$``. The lexer here is a port of just the parts of
``shell/lex.go`` that matter for that: word splitting, quotes, escapes, ``$``
forms kept as written (``SkipUnsetEnv`` with an empty environment) and the
``<<`` operator that swallows the blanks after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pybuild.gocompat import go_isspace, go_quote, runes

_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_MAX_UINT64 = 2**64 - 1
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_HEREDOC_BLANKS = frozenset(" \t\r")


@dataclass
class Heredoc:
    """One heredoc attached to an instruction (BuildKit ``parser.Heredoc``).

    ``content`` is the raw body, line endings included and tabs not stripped
    even when ``chomp`` is set (see :func:`chomp_heredoc_content`).
    """

    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    file_descriptor: int = 0


class HeredocError(ValueError):
    """A heredoc word that the lexer rejects (e.g. an unterminated quote)."""


class _LexError(Exception):
    pass


class _Words:
    """``wordsStruct``. The buffer lives on the lexer and is shared by nested
    calls, exactly like Go's ``shellWord.wordsBuffer``."""

    __slots__ = ("in_word", "lx", "words")

    def __init__(self, lx: _Lexer) -> None:
        self.lx = lx
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if go_isspace(ch):
            if self.in_word and self._flush():
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, s: str) -> None:
        self.lx.buf.append(s)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def _flush(self) -> bool:
        word = "".join(self.lx.buf)
        if not word:
            return False
        self.words.append(word)
        self.lx.buf.clear()
        return True

    def get_words(self) -> list[str]:
        if self._flush():
            self.in_word = False
        return self.words


class _Lexer:
    """The subset of BuildKit's ``shellWord`` used for heredoc detection."""

    __slots__ = ("buf", "n", "orig", "pos", "raw_escapes", "raw_quotes", "src")

    def __init__(self, src: str, *, raw_quotes: bool, raw_escapes: bool) -> None:
        self.orig = src
        src = runes(src)  # text/scanner turns invalid bytes into U+FFFD
        if src.startswith("\ufeff"):
            src = src[1:]  # ... and skips a BOM at the very start
        self.src = src
        self.n = len(src)
        self.pos = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.buf: list[str] = []

    def peek(self) -> str | None:
        return self.src[self.pos] if self.pos < self.n else None

    def next(self) -> str | None:
        if self.pos >= self.n:
            return None
        ch = self.src[self.pos]
        self.pos += 1
        return ch

    def process(self) -> list[str]:
        try:
            return self.stop_on(None, self.raw_escapes)[1]
        except _LexError as err:
            raise _LexError(f"failed to process {go_quote(self.orig)}: {err}") from None

    def stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        restore = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = restore

    def _stop_on(self, stop: str | None) -> tuple[str, list[str]]:
        result: list[str] = []
        self.buf.clear()
        words = _Words(self)
        while (ch := self.peek()) is not None:
            if ch == stop:
                self.pos += 1
                return "".join(result), words.get_words()
            special = self._special(ch)
            if special is not None:
                tmp = special()
                result.append(tmp)
                if ch == "$":
                    words.add_string(tmp)
                else:
                    words.add_raw(tmp)
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                nxt = self.next()
                if nxt is None:
                    break
                ch = nxt
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop is not None:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def _special(self, ch: str) -> Callable[[], str] | None:
        if ch == "$":
            return self._dollar
        if ch == "'":
            return self._single_quote
        if ch == '"':
            return self._double_quote
        if ch == "<":
            return self._possible_heredoc
        return None

    def _single_quote(self) -> str:
        self.pos += 1
        out = ["'"] if self.raw_quotes else []
        while True:
            ch = self.next()
            if ch is None:
                raise _LexError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def _double_quote(self) -> str:
        self.pos += 1
        out = ['"'] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if ch is None:
                raise _LexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt is None:
                    continue
                if nxt in ('"', "$", "\\"):
                    ch = nxt
                    self.pos += 1
            out.append(ch)

    def _possible_heredoc(self) -> str:
        self.pos += 1
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.pos < self.n and self.src[self.pos] in _HEREDOC_BLANKS:
            self.pos += 1
        return "<<" + self.src[start : self.pos]

    def _dollar(self) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self._name()
            return "$" + name  # unset variables are kept as written
        self.pos += 1
        first = self.peek()
        if first is None:
            raise _LexError("syntax error: missing '}'")
        if first in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self._name()
        ch = self.next()
        chs = "\ufffd" if ch is None else ch  # Go's string(scanner.EOF)
        if ch == "}":
            return "${" + name + "}"
        if ch == ":" or (ch is not None and ch in "+-?#%"):
            if ch == ":":
                ch = self.next()
                chs += "\ufffd" if ch is None else ch
                if ch is not None and ch in "#%":
                    raise _LexError(f"unsupported modifier ({chs}) in substitution")
            word = self._until("}", ch is not None and ch in "#%", "syntax error: missing '}'")
            return "${" + name + chs + word + "}"
        if ch == "/":
            if self.peek() == "/":
                self.pos += 1  # Go drops this second '/' when re-printing
            pattern = self._until("/", True, "syntax error: missing '/' in ${}")
            replacement = self._until("}", True, "syntax error: missing '}'")
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        raise _LexError(f"unsupported modifier ({chs}) in substitution")

    def _until(self, stop: str, raw_escapes: bool, eof_message: str) -> str:
        try:
            return self.stop_on(stop, raw_escapes)[0]
        except _LexError:
            if self.peek() is None:
                raise _LexError(eof_message) from None
            raise

    def _name(self) -> str:
        ch = self.peek()
        if ch is None:
            return ""
        if ch.isdecimal():
            start = self.pos
            while self.pos < self.n and self.src[self.pos].isdecimal():
                self.pos += 1
            return self.src[start : self.pos]
        if ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        start = self.pos
        while self.pos < self.n:
            c = self.src[self.pos]
            if not (c.isalpha() or c.isdecimal() or c == "_"):
                break
            self.pos += 1
        return self.src[start : self.pos]


def parse_heredoc(src: str) -> Heredoc | None:
    """BuildKit ``ParseHeredoc``: the heredoc a single word opens, if any.

    Raises :class:`HeredocError` when the delimiter cannot be lexed.
    """
    m = _HEREDOC_WORD.match(src)
    if m is None:
        return None
    fd = _parse_fd(m[1])
    rest = m[3]
    if not rest:
        return None
    try:
        words = _Lexer(rest, raw_quotes=False, raw_escapes=False).process()
        if len(words) != 1:
            return None
        raw = _Lexer(rest, raw_quotes=True, raw_escapes=False).process()
    except _LexError as err:
        raise HeredocError(str(err)) from None
    except RecursionError:
        return None  # hundreds of nested ${...}: not treated as a heredoc
    if len(raw) != len(words):
        raise HeredocError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    # A quote that the unquoting pass removed means part of the name was quoted.
    expand = _quote_count(words[0]) == _quote_count(raw[0])
    return Heredoc(name=words[0], expand=expand, chomp=m[2] == "-", file_descriptor=fd)


def _parse_fd(digits: str) -> int:
    """strconv.ParseUint as BuildKit uses it: "" is 0, overflow saturates."""
    if not digits:
        return 0
    if len(digits) > 20:  # int() also refuses very long digit strings
        return _MAX_UINT64
    return min(int(digits), _MAX_UINT64)


def must_parse_heredoc(src: str) -> Heredoc | None:
    """BuildKit ``MustParseHeredoc``: like :func:`parse_heredoc`, errors give None."""
    try:
        return parse_heredoc(src)
    except HeredocError:
        return None


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs an instruction line opens, in order of appearance."""
    try:
        words = _Lexer(line, raw_quotes=True, raw_escapes=True).process()
    except (_LexError, RecursionError):
        words = []  # BuildKit ignores lexing errors here: no heredocs
    docs: list[Heredoc] = []
    for word in words:
        doc = parse_heredoc(word)
        if doc is not None:
            docs.append(doc)
    return docs


def chomp_heredoc_content(src: str) -> str:
    """``ChompHeredocContent``: strip leading tabs from every line (``<<-``)."""
    return _LEADING_TABS.sub("", src)


def _quote_count(s: str) -> int:
    return s.count("'") + s.count('"')

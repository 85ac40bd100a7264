"""Unit tests for pybuild.frontend.shell.lex beyond the upstream conformance data.

Error texts are BuildKit's (lex.go); the helper tables at the bottom are ported
from lex_test.go (TestConvertShellPatternToRegex, TestReversePattern, TestGetEnv).
"""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.frontend.shell import lex as lexmod
from pybuild.frontend.shell.lex import ExpansionError, ShellLex, build_envs

ENV = {"FOO": "axbx", "EMPTY": "", "ABC": "abc", "SPACE": "a  b", "BS": "\\"}


def expand(word: str, env: object = ENV, **options: object) -> str:
    return ShellLex("\\", **options).process_word(word, env)  # type: ignore[arg-type]


# -- errors -------------------------------------------------------------------------

ERROR_CASES = [
    ("${", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:}", "syntax error: bad substitution"),
    ("${{x}", "syntax error: bad substitution"),
    ("${.}", "unsupported modifier (.) in substitution"),
    ("he${FOO", "unsupported modifier (\ufffd) in substitution"),
    ("${FOO:", "syntax error: missing '}'"),
    ("${FOO:=x}", "unsupported modifier (:=) in substitution"),
    ("${FOO:YYY}", "unsupported modifier (:Y) in substitution"),
    ("${FOO=x}", "unsupported modifier (=) in substitution"),
    ("${FOO:#x}", "unsupported modifier (:#) in substitution"),
    ("${FOO:%%x}", "unsupported modifier (:%) in substitution"),
    ("${FOO:-abc", "syntax error: missing '}'"),
    ("${FOO:-${BAR}", "syntax error: missing '}'"),
    ("${FOO/abc", "syntax error: missing '/' in ${}"),
    ("${FOO//}", "syntax error: missing '/' in ${}"),
    ("${FOO/a/b", "syntax error: missing '}'"),
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
    ('"abc\\"', "unexpected end of statement while looking for matching double-quote"),
    ("${FOO#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
    ("${FOO%x\\y}", "invalid pattern (\\yx) in substitution: invalid escape '\\y'"),
    ("${FOO#$BS}", "invalid pattern (\\) in substitution: invalid escape '\\\ufffd'"),
    ("${FOO/\\a/b}", "invalid pattern (\\a) in substitution: invalid escape '\\a'"),
    ("${NOPE?}", "NOPE: is not allowed to be unset"),
    ("${NOPE:?}", "NOPE: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${NOPE:?custom error}", "NOPE: custom error"),
    ("${EMPTY:?is $ABC}", "EMPTY: is abc"),
    ("${FOO:-${NOPE:?inner}}", "NOPE: inner"),
]


@pytest.mark.parametrize(("word", "reason"), ERROR_CASES)
def test_error_reason(word: str, reason: str) -> None:
    with pytest.raises(ExpansionError) as info:
        expand(word)
    assert info.value.reason == reason
    assert info.value.word == word


def test_error_message_is_wrapped_like_buildkit() -> None:
    with pytest.raises(ExpansionError) as info:
        expand("${FOO:?custom error}", {})
    assert str(info.value) == 'failed to process "${FOO:?custom error}": FOO: custom error'
    assert "FOO: custom error" in info.value.message


def test_error_word_is_go_quoted() -> None:
    with pytest.raises(ExpansionError) as info:
        expand('a"b\tc\x01')
    assert str(info.value).startswith('failed to process "a\\"b\\tc\\x01": ')


def test_expansion_error_is_user_error() -> None:
    assert issubclass(ExpansionError, UserError)
    with pytest.raises(UserError):
        expand("${}")


def test_skip_unset_env_does_not_hide_unsupported_modifier_when_set() -> None:
    with pytest.raises(ExpansionError):
        expand("${FOO:=x}", skip_unset_env=True)
    assert expand("${NOPE:=x}", skip_unset_env=True) == "${NOPE:=x}"


# -- environment handling -----------------------------------------------------------------


def test_env_list_last_duplicate_wins() -> None:
    assert expand("$car", ["foo=bar", "car=hat", "car=bike"]) == "bike"


def test_env_list_item_without_equals_is_set_and_empty() -> None:
    lex = ShellLex()
    assert lex.process_word_with_matches("${foo-unset}", ["foo"]) == ("", {"foo"}, set())


@pytest.mark.parametrize(
    ("env", "name", "value"),
    [
        ([], "foo", None),
        (["foo"], "foo", ""),
        (["foo="], "foo", ""),
        (["foo=bar"], "foo", "bar"),
        (["foo=bar", "car=hat"], "car", "hat"),
        (["foo=bar", "car=hat", "car=bike"], "car", "bike"),
        (["a=b=c"], "a", "b=c"),
    ],
)
def test_build_envs(env: list[str], name: str, value: str | None) -> None:
    assert build_envs(env).get(name) == value


def test_names_are_case_sensitive() -> None:
    assert expand("$foo|${Foo}|$FOO") == "||axbx"


def test_env_string_is_rejected() -> None:
    with pytest.raises(TypeError):
        ShellLex().process_word("$A", "A=b")


def test_matches_and_unmatched() -> None:
    lex = ShellLex()
    result, matched, unmatched = lex.process_word_with_matches("$FOO ${NOPE:-$ABC} ${EMPTY+x}", ENV)
    assert result == "axbx abc x"
    assert matched == {"FOO", "ABC", "EMPTY"}
    assert unmatched == {"NOPE"}


# -- expansion semantics --------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${FOO//x/-}", "a-b-"),
        ("${FOO/x/-}", "a-bx"),
        # Go ReplaceAllString: no replacement for an empty match right after a match.
        ("${ABC//*/-}", "-"),
        ("${ABC//b*/-}", "a-"),
        ("${ABC//x*/-}", "abc"),
        ("${ABC///-}", "-a-b-c-"),
        # The replacement is a Go regexp template: `$0` is the whole match.
        ("${FOO//x/[\\$0]}", "a[\\x]b[\\x]"),
        ("${FOO/x/[\\$0]}", "a[\\$0]bx"),
        ("${FOO//x/\\$\\$}", "a\\$\\$b\\$\\$"),
        ("${FOO//x/\\$0y}", "a\\b\\"),
        ("${ABC#a}", "bc"),
        ("${ABC%c}", "ab"),
        ("${ABC%%?*}", ""),
        ("${ABC%?*}", "ab"),
        ("${ABC##?*}", ""),
        ("${ABC#?*}", "bc"),
        ("${ABC#$EMPTY}", "abc"),
        ("${FOO#\\}}", "axbx"),
        ("${NOPE#x}", ""),
    ],
)
def test_pattern_operators(word: str, expected: str) -> None:
    assert expand(word) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$", "$"),
        ("a$", "a$"),
        ("$.x", "$.x"),
        ("$1x", "x"),
        ("$٣x", "x"),  # a non-ASCII decimal digit also starts a positional name
        ("$a٣", ""),
        ("$_a_1", ""),
        ("$é", ""),
        ("${é:-d}", "d"),
        ("\ufeff$ABC", "abc"),  # Go's text/scanner drops a leading BOM
        ("a\ufeff$ABC", "a\ufeffabc"),
        ("a\\", "a"),
        ("'a\\'", "a\\"),
        ('"a\\b"', "a\\b"),
        ('"a\\\\b"', "a\\b"),
        ('"a\\$ABC"', "a$ABC"),
        ('"$SPACE"', "a  b"),
    ],
)
def test_word_basics(word: str, expected: str) -> None:
    assert expand(word) == expected


def test_backtick_escape_token() -> None:
    lex = ShellLex("`")
    assert lex.process_word("a`$ABC", ENV) == "a$ABC"
    assert lex.process_word("a\\b", ENV) == "a\\b"
    assert lex.process_word('"a\\$ABC"', ENV) == "a\\abc"
    assert lex.process_word('"a`"b"', ENV) == 'a"b'
    assert lex.process_word("a` b", ENV) == "a b"
    assert lex.process_words("a` b c", ENV) == ["a b", "c"]


def test_escape_token_must_be_one_character() -> None:
    with pytest.raises(ValueError):
        ShellLex("")


# -- word splitting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("", []),
        ("   ", []),
        ("a b  c", ["a", "b", "c"]),
        ("a$SPACE", ["aa", "b"]),
        ('a"$SPACE"', ["aa  b"]),
        ("a\\ b", ["a b"]),
        ("''", []),
        ("a'' b", ["a", "b"]),
        ("a\u00a0b", ["a", "b"]),  # Go's unicode.IsSpace includes NBSP
        ("a\x1cb", ["a\x1cb"]),  # ... but not U+001C (Python's isspace does)
        ("${NOPE:-x y}", ["x", "y"]),
        # Upstream quirk: nested ${...} processing clears the shared words buffer,
        # so text before a ${x:-...} in the same word is lost (lex.go wordsBuffer).
        ("pre${NOPE:-x}post", ["xpost"]),
        ("a pre${NOPE:-x}", ["a", "x"]),
    ],
)
def test_process_words(word: str, expected: list[str]) -> None:
    assert ShellLex().process_words(word, ENV) == expected


# -- lexer switches ---------------------------------------------------------------------


def test_raw_quotes() -> None:
    assert expand("'a b'\"$ABC\"", raw_quotes=True) == "'a b'\"abc\""


def test_raw_escapes() -> None:
    assert expand('a\\ b"c\\"d"', raw_escapes=True) == 'a\\ bc\\"d'


def test_skip_process_quotes() -> None:
    assert expand("'$ABC' \"x\"", skip_process_quotes=True) == "'abc' \"x\""


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$NOPE", "$NOPE"),
        ("${NOPE}", "${NOPE}"),
        ("${NOPE:-d}", "${NOPE:-d}"),
        ("${NOPE?msg}", "${NOPE?msg}"),
        ("${NOPE#a*}", "${NOPE#a*}"),
        ("${NOPE//a/b}", "${NOPE/a/b}"),
        ("$ABC-${NOPE}", "abc-${NOPE}"),
    ],
)
def test_skip_unset_env(word: str, expected: str) -> None:
    assert expand(word, skip_unset_env=True) == expected


def test_attributes_can_be_toggled() -> None:
    lex = ShellLex()
    lex.raw_quotes = True
    lex.raw_escapes = True
    assert lex.process_word("'a'\\b", {}) == "'a'\\b"


# -- helper tables from lex_test.go ---------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", "^.*"),
        ("?", "^."),
        ("\\*", "^\\*"),
        ("(()[]{\\}^$.\\*\\?|\\\\", "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\"),
    ],
)
def test_shell_pattern_to_regex(pattern: str, expected: str) -> None:
    assert lexmod.shell_pattern_to_regex(pattern, greedy=True, anchored=True) == expected


def test_shell_pattern_to_regex_non_greedy_unanchored() -> None:
    assert lexmod.shell_pattern_to_regex("a*b", greedy=False, anchored=False) == "a.*?b"


@pytest.mark.parametrize("pattern", ["\\", "\\x", "\\\\\\"])
def test_shell_pattern_to_regex_invalid(pattern: str) -> None:
    with pytest.raises(lexmod._LexError):
        lexmod.shell_pattern_to_regex(pattern, greedy=True, anchored=True)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a\\*c", "c\\*a"),
        ("\\\\\\ab", "b\\a\\\\"),
        ("ab\\", "\\ba"),
        ("👽\\🚀🖖", "🖖\\🚀👽"),
        ("\\\\b", "b\\\\"),
    ],
)
def test_reverse_pattern(pattern: str, expected: str) -> None:
    assert lexmod._reverse_pattern(pattern) == expected

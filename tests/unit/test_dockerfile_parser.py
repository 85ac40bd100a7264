"""Unit tests for the Dockerfile parser: cases the BuildKit corpus lacks.

Expected dumps follow BuildKit's parser code (parser.go, line_parsers.go,
split_command.go, directives.go); the ones the old BuildKit behind the PyPI
``dockerfile`` package also covers were cross-checked against it.
"""

from __future__ import annotations

import time

import pytest

from pybuild.errors import DockerfileSyntaxError
from pybuild.frontend.dockerfile.dump import dump_ast, go_quote
from pybuild.frontend.dockerfile.heredoc import HeredocError
from pybuild.frontend.dockerfile.line_parsers import parse_words, split_command
from pybuild.frontend.dockerfile.parser import (
    Heredoc,
    Node,
    ParseResult,
    must_parse_heredoc,
    parse,
    parse_heredoc,
)


def dump(text: str | bytes) -> str:
    return dump_ast(parse(text)).rstrip("\n")


def fails(text: str | bytes) -> DockerfileSyntaxError:
    with pytest.raises(DockerfileSyntaxError) as info:
        parse(text, filename="ctx/Dockerfile")
    err = info.value
    assert err.location is not None
    assert err.location.filename == "ctx/Dockerfile"
    assert err.location.start_line >= 1
    return err


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("FROM golang:1.22 AS build", '(from "golang:1.22" "AS" "build")'),
        (
            "from --platform=$BUILDPLATFORM alpine as base",
            '(from ["--platform=$BUILDPLATFORM"] "alpine" "as" "base")',
        ),
        ('SHELL ["/bin/bash", "-c"]', '(shell "/bin/bash" "-c")'),
        ("SHELL /bin/sh -c", '(shell "/bin/sh -c")'),
        ("STOPSIGNAL SIGKILL", '(stopsignal "SIGKILL")'),
        ("STOPSIGNAL --foo SIGTERM", '(stopsignal ["--foo"] "SIGTERM")'),
        ("MAINTAINER Jane <j@x.io>", '(maintainer "Jane <j@x.io>")'),
        ("FOO bar baz", '(foo "")'),
        ("foo", '(foo "")'),
        ("HEALTHCHECK NONE", '(healthcheck "NONE")'),
        (
            "ONBUILD --x COPY --from=build /a /b",
            '(onbuild ["--x"] (copy ["--from=build"] "/a" "/b"))',
        ),
        ("ONBUILD ONBUILD RUN x", '(onbuild (onbuild (run "x")))'),
        ("ONBUILD", "(onbuild)"),
        ("EXPOSE 80/tcp \t 443", '(expose "80/tcp" "443")'),
        ('VOLUME ["/data", "/logs"]', '(volume "/data" "/logs")'),
        ("WORKDIR /app dir", '(workdir "/app dir")'),
        ("USER", "(user)"),
        ("ENV", "(env)"),
        ('ARG a=1 b c="x y"', '(arg "a=1" "b" "c=\\"x y\\"")'),
        (
            'LABEL a=b c="d e" f=g\\ h',
            '(label "a" "b" "=" "c" "\\"d e\\"" "=" "f" "g\\\\ h" "=")',
        ),
        ("ENV =x a==b", '(env "" "x" "=" "a" "=b" "=")'),
        ("COPY --a=\"x y\" --b='z' c d", '(copy ["--a=x y" "--b=z"] "c" "d")'),
        ("COPY --a=b\\ c d e", '(copy ["--a=b c"] "d" "e")'),
        ("COPY --a --b x", '(copy ["--a" "--b"] "x")'),
        ("COPY --a=x", '(copy ["--a=x"])'),
        ("COPY -x y", '(copy "-x" "y")'),
        ('RUN ["\\u00e9", "\\ud800", "\\u0000"]', '(run "é" "\ufffd" "\\x00")'),
        ("RUN [NaN]", '(run "[NaN]")'),
        ('CMD ["a",1e999]', '(cmd "[\\"a\\",1e999]")'),
        # JSON followed by more text is not JSON (json.Unmarshal, not a Decoder).
        ('ENTRYPOINT ["a"] extra', '(entrypoint "[\\"a\\"] extra")'),
        ("RUN\tx", '(run "x")'),
        # Only [\t\v\f\r ] separates the keyword, so this is one unknown word.
        ("RUN\u00a0x", '(run\u00a0x "")'),
        ("HEALTHCHECK CMD", '(healthcheck "CMD")'),
    ],
)
def test_instruction_dumps(source: str, expected: str) -> None:
    assert dump(source) == expected


def test_invalid_utf8_dumps_as_bytes() -> None:
    result = parse(b"RUN \xff\xfe ok\nLABEL a=\xc3\n")
    assert dump_ast(result) == '(run "\\xff\\xfe ok")\n(label "a" "\ufffd" "=")\n'
    run = result.ast.children[0]
    assert run.args()[0].encode("utf-8", "surrogateescape") == b"\xff\xfe ok"


def test_flag_bytes_are_read_as_latin1() -> None:
    # BuildKit's flag scanner walks bytes; 0xA0 (2nd byte of U+00E0) is a space.
    assert dump("COPY --x=\u00e0 a b") == '(copy ["--x=\u00c3"] "a" "b")'
    assert dump("COPY --x=\u00e9 a") == '(copy ["--x=\u00c3\u00a9"] "a")'
    # A split inside a 3-byte rune leaves an orphan continuation byte behind.
    assert dump("COPY --a=x\u0800b y") == '(copy ["--a=x\u00e0"] "\\x80b" "y")'


def test_bom_crlf_and_nul() -> None:
    assert dump(b"\xef\xbb\xbfFROM a\r\nRUN b \\\r\n c\r\n") == '(from "a")\n(run "b  c")'
    assert dump(b"RUN a\x00b") == '(run "a\\x00b")'


def test_node_api() -> None:
    result = parse("# leading\nFROM a\n# about run\nrUn --mount=x echo \\\n  hi\n")
    assert isinstance(result, ParseResult)
    root = result.ast
    assert (root.start_line, root.end_line) == (2, 5)
    run = root.children[1]
    assert isinstance(run, Node)
    assert run.value == "run"
    assert run.keyword == "rUn"
    assert run.original == "rUn --mount=x echo   hi"
    assert run.flags == ["--mount=x"]
    assert run.args() == ["echo   hi"]
    assert not run.is_json
    assert run.attributes == {}
    assert (run.start_line, run.end_line) == (4, 5)
    assert run.prev_comment == ["about run"]
    assert run.dump() == 'run ["--mount=x"] "echo   hi"'
    json_run = parse('RUN ["a"]').ast.children[0]
    assert json_run.attributes == {"json": True}
    assert "run" in repr(json_run)


def test_onbuild_inner_node() -> None:
    child = parse("FROM a\nONBUILD RUN --n=1 ls\n").ast.children[1]
    assert child.value == "onbuild"
    assert child.args() == [""]  # the holder node
    holder = child.next
    assert holder is not None
    inner = holder.children[0]
    assert (inner.value, inner.flags, inner.args()) == ("run", ["--n=1"], ["ls"])
    assert inner.original == "RUN --n=1 ls"
    assert (inner.start_line, inner.end_line) == (2, 2)


def test_deep_onbuild_chain_is_linear() -> None:
    text = "ONBUILD " * 8000 + "RUN x"
    start = time.perf_counter()
    out = dump(text)
    assert time.perf_counter() - start < 5
    assert out.startswith("(onbuild (onbuild ") and out.endswith('(run "x")' + ")" * 8000)


def test_long_argument_chain() -> None:
    text = "EXPOSE" + " 1" * 30000  # just under the 65535-byte line limit
    node = parse(text).ast.children[0]
    assert len(node.args()) == 30000
    assert node.dump().count('"1"') == 30000


def test_deep_json_nesting_is_not_a_crash() -> None:
    # Valid JSON too deep for Python's decoder: not an array of strings.
    err = fails("CMD " + "[" * 5000 + "]" * 5000)
    assert "arrays must be comprised of strings only" in err.message
    # Deeper than Go's limit (10000): not JSON at all, so shell form.
    assert parse("CMD " + "[" * 10001 + "]" * 10001).ast.children[0].is_json is False


def test_continuation_rules() -> None:
    # `foo\\` is a literal backslash, not a continuation.
    assert dump("RUN foo\\\\\nRUN bar") == '(run "foo\\\\\\\\")\n(run "bar")'
    # An escape alone on the first line still starts a continuation.
    assert dump("\\\nRUN a") == '(run "a")'
    # Comment lines inside a continuation are dropped; blank ones warn.
    result = parse("RUN a \\\n# c\n\n  b\n")
    assert dump_ast(result) == '(run "a   b")\n'
    [warning] = result.warnings
    assert warning.message == "Empty continuation line found in: RUN a   b"
    assert warning.line == 4
    assert warning.url.endswith("/no-empty-continuation/")
    # Continuations that only gather whitespace give an empty instruction.
    assert dump("\\\n  \\\n") == '("")'


def test_directives_recorded() -> None:
    result = parse(
        "# syntax=docker/dockerfile:1.7\n# CHECK = skip=all;error=true\n#escape=`\nFROM a `\n  b\n"
    )
    d = result.directives
    assert (d.syntax, d.check, d.escape) == ("docker/dockerfile:1.7", "skip=all;error=true", "`")
    assert d.lines == {"syntax": 1, "check": 2, "escape": 3}
    assert result.escape_token == "`"
    assert dump_ast(result) == '(from "a" "b")\n'


def test_directives_only_in_leading_block() -> None:
    result = parse("FROM a\n# escape=`\nRUN b \\\n c\n")
    assert result.directives.escape is None
    assert result.escape_token == "\\"
    assert parse("# unknown=x\n# escape=`\nFROM a").directives.escape is None


def test_directive_errors() -> None:
    err = fails("# escape=\\\n# Escape=`\nFROM a")
    assert err.message == "only one escape parser directive can be used"
    assert err.location is not None and err.location.start_line == 2
    err = fails("# escape=x\nFROM a")
    assert err.message == "invalid escape token 'x' does not match ` or \\"
    assert err.location is not None and err.location.start_line == 1


def test_error_locations() -> None:
    err = fails("FROM a\nENV a=b \\\n  c\n")
    assert err.message == 'Syntax error - can\'t find = in "c". Must be of the form: name=value'
    assert err.location is not None
    assert (err.location.start_line, err.location.end_line) == (2, 3)
    assert err.location.instruction == "ENV"
    assert err.location.text == "ENV a=b   c"
    err = fails("FROM a\nLABEL x\n")
    assert err.message == "LABEL must have two arguments"
    assert fails("").message == "file with no instructions"
    assert fails("# only a comment\n\n").message == "file with no instructions"


def test_heredoc_errors() -> None:
    err = fails("FROM a\nRUN <<EOF\nno end\n")
    assert err.message == "unterminated heredoc"
    assert err.location is not None
    assert (err.location.start_line, err.location.end_line, err.location.instruction) == (
        2,
        3,
        "RUN",
    )
    # A line the lexer rejects opens no heredoc: the next line is an instruction.
    assert dump("RUN <<EOF 'open\nEOF") == '(run "<<EOF \'open")\n(eof "")'


def test_line_too_long() -> None:
    ok = "RUN " + "x" * (65535 - 4)
    assert parse(ok).ast.children[0].args() == ["x" * 65531]
    err = fails("FROM a\n" + ok + "y\nRUN b\n")
    assert err.message == "dockerfile line greater than max allowed size of 65535"
    assert err.location is not None and err.location.start_line == 2
    # Before any instruction, BuildKit reports the empty file instead.
    assert fails("x" * 70000).message == "file with no instructions"


def test_heredocs() -> None:
    text = (
        "FROM a\n"
        "COPY <<-A 3<<'B C' /dst\r\n"
        "\tline1\r\n"
        "\tA\n"
        "$x\n"
        "B C\n"
        "ONBUILD RUN <<EOF\n"
        "echo hi\n"
        "EOF\n"
        "RUN << EOF cat\n"
        "EOF\n"
        'RUN ["<<EOF"]\n'
        "USER <<X\n"
    )
    result = parse(text)
    copy, onbuild, spaced, json_run, user = result.ast.children[1:]
    assert copy.heredocs == [
        Heredoc(name="A", content="\tline1\r\n", expand=True, chomp=True, file_descriptor=0),
        Heredoc(name="B C", content="$x\n", expand=False, chomp=False, file_descriptor=3),
    ]
    assert (copy.start_line, copy.end_line) == (2, 6)
    assert onbuild.heredocs == [Heredoc(name="EOF", content="echo hi\n")]
    assert spaced.heredocs == [Heredoc(name="EOF", content="")]
    assert spaced.args() == ["<< EOF cat"]
    assert json_run.heredocs == []
    assert user.heredocs == []


def test_heredoc_words() -> None:
    assert parse_heredoc("<<EOF") == Heredoc(name="EOF")
    assert parse_heredoc('9<<-"E"OF') == Heredoc(
        name="EOF", expand=False, chomp=True, file_descriptor=9
    )
    assert parse_heredoc("<<$X") == Heredoc(name="$X")
    assert parse_heredoc("<<${X:-y}") == Heredoc(name="${X:-y}")
    assert parse_heredoc("<<a b") is None
    with pytest.raises(HeredocError):
        parse_heredoc("<<${")
    assert must_parse_heredoc("<<'x") is None


def test_parse_words_and_split_command() -> None:
    assert parse_words('a \'b c\' "d\\" e" f\\ g h\\', "\\") == [
        "a",
        "'b c'",
        '"d\\" e"',
        "f\\ g",
        "h",
    ]
    # No escaping inside single quotes: the quote after \\ closes, the last opens.
    assert parse_words("'it\\'s' x", "\\") == ["'it\\'s' x"]
    assert parse_words("a`  b", "`") == ["a` ", "b"]  # escapes one space only
    assert split_command("  RUN  --a=1 -- --b  x  ") == ("RUN", ["--a=1"], "--b  x")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ('q"b\\s', '"q\\"b\\\\s"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("\u00a0\u00ad\u2028", '"\\u00a0\\u00ad\\u2028"'),
        ("\U000e0001\U0001f600", '"\\U000e0001\U0001f600"'),
        ("♥ é 中", '"♥ é 中"'),
        (b"\xff\xc3".decode("utf-8", "surrogateescape"), '"\\xff\\xc3"'),
    ],
)
def test_go_quote(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted


def test_parse_accepts_str_and_bytes() -> None:
    assert dump("RUN \udcff") == dump(b"RUN \xff") == '(run "\\xff")'
    # Lone surrogates that are not escaped bytes are treated as their WTF-8 bytes.
    assert dump("RUN \ud800") == '(run "\\xed\\xa0\\x80")'


def test_pathological_heredoc_words() -> None:
    # strconv.ParseUint saturates; Python's int() would refuse 5000 digits.
    doc = parse_heredoc("9" * 5000 + "<<EOF")
    assert doc is not None and doc.file_descriptor == 2**64 - 1
    # 3000 unterminated ${a:- : a lexing error, so no heredoc (and no crash).
    deep = "RUN <<EOF " + "${a:-" * 3000 + "\nEOF\n"
    assert [c.value for c in parse(deep).ast.children] == ["run", "eof"]

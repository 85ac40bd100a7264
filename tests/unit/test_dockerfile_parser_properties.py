"""Property tests for the Dockerfile parser.

1. Robustness: random and mutated Dockerfiles never raise anything but
   DockerfileSyntaxError, always locate errors, and parse quickly.
2. Oracle: the PyPI package ``dockerfile`` (3.4.0) wraps BuildKit v0.12.5's Go
   parser. Generated Dockerfiles must parse the same wherever it succeeds.
"""

from __future__ import annotations

import json
import re
import string
from datetime import timedelta
from pathlib import Path
from typing import Any

import dockerfile as oracle  # test dependency: dockerfile==3.4.0 (BuildKit v0.12.5)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.errors import DockerfileSyntaxError
from pybuild.frontend.dockerfile.line_parsers import split_command
from pybuild.frontend.dockerfile.parser import Node, ParseResult, parse

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "dockerfile-parser"
FALLBACK_SEEDS = [
    b"FROM alpine AS build\nRUN echo hi \\\n  there\nCOPY --from=build /a /b\n",
    b'# escape=`\nFROM x\nENV a=b `\n  c="d e"\nCMD ["a", "b"]\n',
    b"FROM x\nRUN <<EOF\nhello\nEOF\nONBUILD COPY <<-A /x\n\tA\n",
]

ROBUST = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),  # generous; a hang or blow-up still fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _seeds() -> list[bytes]:
    found = sorted(CORPUS.glob("*/*/Dockerfile")) + sorted(CORPUS.glob("*/Dockerfile"))
    return [p.read_bytes() for p in found] or FALLBACK_SEEDS


SEEDS = _seeds()
# Fragments that exercise the tricky paths when spliced into a file.
SPECIAL = [
    b"\\\n",
    b"`\n",
    b"\\",
    b" \\ \t\n",
    b"\n\n",
    b"\r\n",
    b"\r",
    b"# escape=`\n",
    b"# escape=\\\n",
    b"#syntax=docker/dockerfile:1\n",
    b"# check=skip=all\n",
    b"<<EOF",
    b"<<-EOF",
    b"<< EOF",
    b"3<<'E F'",
    b"\nEOF\n",
    b"[",
    b"]",
    b'["a", "b"]',
    b"[1e999]",
    b'"',
    b"'",
    b"--",
    b"--flag=",
    b"ONBUILD ",
    b"HEALTHCHECK ",
    b"ENV ",
    b"=",
    b"$",
    b"${",
    b"${a:-",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3\xa0",
    b"\xe0\xa0\x80",
    b"\xc2\x85",
    b"\xe3\x80\x80",
    b"\x00",
    b"\t",
    b"\v",
    b"\f",
]


@st.composite
def mutated_dockerfiles(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "special", "line"]))
        if op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            data[pos : pos + draw(st.integers(1, 16))] = b""
        elif op == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "special":
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if draw(st.booleans()):
                lines.insert(j, lines[i])  # duplicate a line
            else:
                del lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def _check_invariants(data: bytes | str) -> ParseResult | None:
    try:
        result = parse(data, filename="fuzz/Dockerfile")
    except DockerfileSyntaxError as err:
        assert err.location is not None
        assert err.location.filename == "fuzz/Dockerfile"
        assert 1 <= err.location.start_line <= err.location.end_line
        return None
    root = result.ast
    assert root.children
    last_end = 0
    for child in root.children:
        assert last_end < child.start_line <= child.end_line
        last_end = child.end_line
        child.dump().encode("utf-8", "surrogateescape")  # always encodable
    assert (root.start_line, root.end_line) == (
        root.children[0].start_line,
        root.children[-1].end_line,
    )
    assert result.escape_token in ("\\", "`")
    return result


@ROBUST
@given(mutated_dockerfiles())
def test_mutated_corpus_never_crashes(data: bytes) -> None:
    _check_invariants(data)


@ROBUST
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    _check_invariants(data)


@ROBUST
@given(st.text(alphabet=st.sampled_from(list("RUN FROM<\\`'\"[]{}$#=-\n\r\t ,:EOF")), max_size=200))
def test_random_dockerfile_text_never_crashes(data: str) -> None:
    _check_invariants(data)


# --- oracle -----------------------------------------------------------------

KEYWORDS = [
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
    "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
    "HEALTHCHECK", "SHELL", "FOO",
]  # fmt: skip
JSON_CAPABLE = ("RUN", "CMD", "ENTRYPOINT", "SHELL", "ADD", "COPY", "VOLUME")
SAFE_CHARS = string.ascii_letters + string.digits + "/._:@%+,~^!?*()&|;>"
WORD_CHARS = SAFE_CHARS + "éß☃♥€\u00a0\u3000"


def _cased(draw: st.DrawFn, word: str) -> str:
    style = draw(st.sampled_from(["upper", "lower", "mixed"]))
    if style == "upper":
        return word
    if style == "lower":
        return word.lower()
    return "".join(c.lower() if draw(st.booleans()) else c for c in word)


words = st.text(alphabet=WORD_CHARS, min_size=1, max_size=8)
plain_words = st.text(
    alphabet=string.ascii_letters + string.digits + "/._-", min_size=1, max_size=8
)


@st.composite
def shell_words(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["plain", "dq", "sq", "escaped", "var", "dollar-brace", "fancy"]))
    if kind == "plain":
        return draw(plain_words)
    if kind == "dq":
        return '"' + draw(st.text(alphabet=WORD_CHARS + " '\\", max_size=8)) + '"'
    if kind == "sq":
        return "'" + draw(st.text(alphabet=WORD_CHARS + ' "\\', max_size=8)) + "'"
    if kind == "escaped":
        return draw(plain_words) + "\\" + draw(st.sampled_from([" ", '"', "'", "=", "a"]))
    if kind == "var":
        return "$" + draw(plain_words)
    if kind == "dollar-brace":
        return "${" + draw(plain_words) + draw(st.sampled_from(["", ":-x", "+y"])) + "}"
    return draw(words)


@st.composite
def flags(draw: st.DrawFn) -> list[str]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["from", "chown", "mount", "link", "platform", "a-b"]))
        kind = draw(st.sampled_from(["bool", "value", "quoted", "empty", "unicode"]))
        if kind == "bool":
            out.append(f"--{name}")
        elif kind == "value":
            out.append(f"--{name}={draw(plain_words)}")
        elif kind == "quoted":
            out.append(f'--{name}="{draw(plain_words)} {draw(plain_words)}"')
        elif kind == "empty":
            out.append(f"--{name}=")
        else:
            out.append(f"--{name}={draw(words)}")
    if out and draw(st.booleans()):
        out.append("--")
    return out


@st.composite
def json_array(draw: st.DrawFn) -> str:
    items = draw(st.lists(st.text(alphabet=WORD_CHARS + ' "\\\n\t', max_size=6), max_size=3))
    text = json.dumps(items, ensure_ascii=draw(st.booleans()))
    variant = draw(st.sampled_from(["ok", "ok", "spaced", "broken", "single", "number"]))
    if variant == "spaced":
        return text.replace(",", " ,\t")
    if variant == "broken":
        return text[:-1]
    if variant == "single":
        return text.replace('"', "'")
    if variant == "number" and items:
        return text[:-1] + ", 1]"
    return text


@st.composite
def arguments(draw: st.DrawFn, keyword: str) -> str:
    key = keyword.upper()
    if key in ("ENV", "LABEL"):
        if draw(st.booleans()):
            pairs = draw(st.lists(st.tuples(plain_words, shell_words()), min_size=1, max_size=3))
            return " ".join(f"{k}={v}" for k, v in pairs)
        values = draw(st.lists(shell_words(), min_size=1, max_size=3))
        return draw(plain_words) + " " + " ".join(values)
    if key == "ARG":
        return " ".join(
            draw(plain_words) + (("=" + draw(shell_words())) if draw(st.booleans()) else "")
            for _ in range(draw(st.integers(1, 3)))
        )
    if key == "HEALTHCHECK":
        kind = draw(st.sampled_from(["CMD", "NONE", "cmd", "OTHER"]))
        return kind + " " + draw(arguments("RUN"))
    if key == "ONBUILD":
        inner = draw(st.sampled_from([k for k in KEYWORDS if k != "ONBUILD"]))
        inner = _cased(draw, inner)
        fl = " ".join(draw(flags()))
        return f"{inner} {fl} {draw(arguments(inner))}"
    if key in JSON_CAPABLE and draw(st.booleans()):
        return draw(json_array())
    return " ".join(draw(st.lists(shell_words(), min_size=0, max_size=4)))


@st.composite
def instructions(draw: st.DrawFn, escape: str) -> str:
    keyword = _cased(draw, draw(st.sampled_from(KEYWORDS)))
    parts = [keyword, *draw(flags()), draw(arguments(keyword))]
    line = " ".join(p for p in parts if p)
    # Split the line with continuations, comments and blank lines inside.
    tokens = line.split(" ")
    out = [draw(st.sampled_from(["", "", "  ", "\t"])) + tokens[0]]
    for tok in tokens[1:]:
        if draw(st.integers(0, 5)) == 0:
            cont = escape + draw(st.sampled_from(["", " ", "\t "])) + "\n"
            filler = draw(st.sampled_from(["", "# comment\n", "  # indented comment\n", "\n"]))
            out.append(cont + filler + draw(st.sampled_from(["", " ", "\t"])) + tok)
        else:
            out.append(" " + tok)
    text = "".join(out)
    if draw(st.integers(0, 6)) == 0:
        text += " " + escape  # a continuation at the very end
    return text


HEREDOC_NAMES = ["EOF", "A", "FILE"]
HEREDOC_BODY_LINES = ["echo hi", "\tindented", "", "# not a comment"]
ESCAPE_HEADERS = ["# escape=`\n", "#escape = `\n", "# syntax=x\n# escape=`\n"]


@st.composite
def heredoc_instruction(draw: st.DrawFn) -> str:
    keyword = draw(st.sampled_from(["RUN", "COPY", "run", "ADD"]))
    names = draw(st.lists(st.sampled_from(HEREDOC_NAMES), min_size=1, max_size=2, unique=True))
    chomp = draw(st.booleans())
    head = " ".join(("<<-" if chomp else "<<") + n for n in names)
    lines = [f"{keyword} {head} /dest"]
    for name in names:
        lines += draw(st.lists(st.sampled_from(HEREDOC_BODY_LINES), max_size=3))
        lines.append(("\t" if chomp and draw(st.booleans()) else "") + name)
    return "\n".join(lines)


@st.composite
def dockerfiles(draw: st.DrawFn) -> str:
    escape = "\\"
    header = ""
    if draw(st.integers(0, 4)) == 0:
        escape = "`"
        header = draw(st.sampled_from(ESCAPE_HEADERS))
    body = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["instr", "instr", "instr", "comment", "blank", "heredoc"]))
        if kind == "instr":
            body.append(draw(instructions(escape)))
        elif kind == "comment":
            body.append("# " + draw(plain_words))
        elif kind == "blank":
            body.append(draw(st.sampled_from(["", "   ", "\t"])))
        else:
            body.append(draw(heredoc_instruction()))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    text = header + newline.join(body)
    return text + draw(st.sampled_from(["", "\n"]))


def _oracle(text: str) -> list[tuple[Any, ...]] | str | None:
    """The oracle's view; "error" if it rejects the file, None if it cannot
    represent the result (its Go strings are not valid UTF-8)."""
    try:
        commands = oracle.parse_string(text)
    except oracle.GoParseError:
        return "error"
    except UnicodeDecodeError:
        return None
    if any(c.json and _json_then_more(c.original or "") for c in commands):
        return None
    return [
        (
            c.cmd or "",
            c.sub_cmd or "",
            c.json,
            list(c.flags),
            list(c.value),
            c.start_line,
            c.end_line,
            [(h.name, h.content, h.file_descriptor) for h in c.heredocs],
        )
        for c in commands
    ]


def _mine(text: str) -> list[tuple[Any, ...]] | str:
    try:
        result = parse(text)
    except DockerfileSyntaxError:
        return "error"
    return [_view(child) for child in result.ast.children]


def _view(child: Node) -> tuple[Any, ...]:
    inner = child
    sub = ""
    heredocs = [(h.name, h.content, h.file_descriptor) for h in child.heredocs]
    if child.value == "onbuild" and child.next is not None and child.next.children:
        inner = child.next.children[0]
        sub = inner.keyword
        heredocs = []  # the oracle's wrapper does not report ONBUILD heredocs
    values = inner.args()
    if inner.value in ("env", "label"):
        values = [v for i, v in enumerate(values) if i % 3 != 2]  # wrapper drops separators
    return (
        child.keyword,
        sub,
        inner.is_json,
        child.flags,
        values,
        child.start_line,
        child.end_line,
        heredocs,
    )


def _oracle_comparable(text: str) -> bool:
    """False for syntax BuildKit v0.12.5 handled differently:

    - blanks after ``<<``: its lexer did not join ``<< EOF`` into one word;
    - ``${v:-w}``-style forms on a line with ``<<``: the newer lexer shares one
      word buffer with the nested call, which drops the text before it;
    - the ``check`` directive, which it did not know;
    - a directive whose ``#`` is followed by \\v or non-ASCII whitespace: it
      matched ``#\\s*`` (Go's \\s is [\\t\\n\\f\\r ]); now any Unicode space
      is trimmed.
    """
    return _NEW_SYNTAX.search(text) is None


_NEW_SYNTAX = re.compile(
    r"<<[ \t\r]"
    r"|<<[^\n]*\$\{[^}\n]*[:+\-?#%/]"
    r"|^[^\S\n]*#[^\S\n]*check[^\S\n]*="
    r"|^[^\S\n]*#[^\S\n]*[\v\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    re.IGNORECASE | re.MULTILINE,
)


JSON_FORMS = {"run", "cmd", "entrypoint", "shell", "add", "copy", "volume", "healthcheck"}


def _json_then_more(original: str) -> bool:
    """True if the instruction is a JSON array followed by more text.

    v0.12.5 decoded only the first JSON value (json.Decoder) and ignored the
    rest; current BuildKit uses json.Unmarshal, so trailing text makes the
    instruction shell form (or no error where v0.12.5 saw a non-string).
    """
    keyword, _, rest = split_command(original)
    while keyword.lower() == "onbuild" and rest:
        keyword, _, rest = split_command(rest)
    if keyword.lower() not in JSON_FORMS:
        return False
    if keyword.lower() == "healthcheck":
        parts = rest.split(maxsplit=1)
        rest = parts[1] if len(parts) == 2 else ""
    rest = rest.lstrip()
    try:
        _, end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return False
    return bool(rest[end:].strip())


def _has_json_then_more(text: str) -> bool:
    try:
        children = parse(text).ast.children
    except DockerfileSyntaxError:
        return False
    return any(_json_then_more(child.original) for child in children)


def _contains_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


def _compare_with_oracle(text: str) -> None:
    expected = _oracle(text)
    mine = _mine(text)
    # The oracle passes values through C strings, which end at a NUL.
    if expected is None or _contains_nul(mine):
        return
    if _has_json_then_more(text):
        return
    assert mine == expected


ORACLE = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@ORACLE
@given(dockerfiles())
def test_agrees_with_buildkit_oracle(text: str) -> None:
    assert _oracle_comparable(text)
    _compare_with_oracle(text)


@ORACLE
@given(mutated_dockerfiles())
def test_mutated_corpus_agrees_with_oracle(data: bytes) -> None:
    text = data.decode("utf-8", "replace").replace("\x00", "")
    if _oracle_comparable(text):
        _compare_with_oracle(text)

"""`--format`: the part of Go's text/template that `docker images` / `docker inspect`
formats use, evaluated over plain JSON-shaped values (dicts, lists, strings, numbers).
Nothing is ever evaluated as Python.

    {{.Field.Sub}}  {{.}}  {{json .}}  {{json .Config}}  {{.A | json}}
    {{join .RepoTags ","}}  {{index .Labels "k"}}  {{index .RepoTags 0}}  {{len .X}}
    {{lower .X}} {{upper .X}} {{title .X}} {{truncate .X 12}} {{pad .X 1 1}}
    {{printf "%s:%s" .Repository .Tag}}
    {{if .X}}…{{else if .Y}}…{{else}}…{{end}}  {{range .X}}{{.}}{{end}}  {{with .X}}…{{end}}
    {{- trims the whitespace before, -}} after; "table ..." adds a header row and aligns
    tab-separated columns (docker's formatter).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pybuild.errors import UserError

_NO_VALUE = object()  # a missing map key: prints "<no value>", as Go's templates do
_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<num>-?\d+)|"""
                    r"""(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<pipe>\|)|"""
                    r"""(?P<lp>\()|(?P<rp>\))|(?P<word>[A-Za-z_][A-Za-z0-9_]*))""")


def _bad(fmt: str, why: str) -> UserError:
    return UserError(f"invalid --format {fmt!r}: {why}", code="bad-format")


# -- values as Go prints them ---------------------------------------------------------------


def go_string(value: Any) -> str:
    """`fmt.Sprint` of a JSON-shaped value."""
    if value is _NO_VALUE:
        return "<no value>"
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _truth(value: Any) -> bool:
    if value is _NO_VALUE or value is None:
        return False
    if isinstance(value, bool | int | float | str | list | tuple | dict):
        return bool(value)
    return True


def _json(value: Any) -> str:
    return json.dumps(None if value is _NO_VALUE else value, ensure_ascii=False,
                      separators=(",", ":"))


def _field(value: Any, path: str, fmt: str) -> Any:
    for name in path.split(".")[1:]:
        if not name:
            continue
        if isinstance(value, dict):
            value = value.get(name, _NO_VALUE)
        elif value is _NO_VALUE or value is None:
            raise _bad(fmt, f"nil value has no field {name}")
        else:
            raise _bad(fmt, f"can't evaluate field {name} in type {type(value).__name__}")
    return value


def _index(fmt: str, value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, _NO_VALUE)
        elif isinstance(value, list | tuple) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise _bad(fmt, f"index out of range: {key}")
            value = value[key]
        else:
            raise _bad(fmt, f"can't index item of type {type(value).__name__}")
    return value


def _printf(fmt: str, spec: Any, *args: Any) -> str:
    out, i = [], 0

    def repl(m: re.Match[str]) -> str:
        nonlocal i
        verb = m.group(1)
        if verb == "%":
            return "%"
        if i >= len(args):
            return f"%!{verb}(MISSING)"
        arg = args[i]
        i += 1
        if verb == "q":
            return json.dumps(go_string(arg))
        if verb == "d" and isinstance(arg, int | float):
            return str(int(arg))
        return go_string(arg)

    out.append(re.sub(r"%([svdq%])", repl, str(spec)))
    return "".join(out)


def _call(fmt: str, name: str, args: list[Any]) -> Any:
    def need(n: int) -> None:
        if len(args) != n:
            raise _bad(fmt, f"wrong number of args for {name}: want {n} got {len(args)}")

    match name:
        case "json":
            need(1)
            return _json(args[0])
        case "join":
            need(2)
            items = args[0] if isinstance(args[0], list | tuple) else []
            return str(args[1]).join(go_string(x) for x in items)
        case "split":
            need(2)
            return go_string(args[0]).split(str(args[1]))
        case "lower":
            need(1)
            return go_string(args[0]).lower()
        case "upper":
            need(1)
            return go_string(args[0]).upper()
        case "title":
            need(1)
            return go_string(args[0]).title()
        case "truncate":
            need(2)
            text = go_string(args[0])
            return text[: int(args[1])]
        case "pad":
            need(3)
            text = go_string(args[0])
            return " " * int(args[1]) + text + " " * int(args[2]) if text else text
        case "index":
            if not args:
                raise _bad(fmt, "index needs an argument")
            return _index(fmt, *args)
        case "len":
            need(1)
            if not isinstance(args[0], list | tuple | dict | str):
                raise _bad(fmt, f"len of {type(args[0]).__name__}")
            return len(args[0])
        case "printf":
            if not args:
                raise _bad(fmt, "printf needs a format")
            return _printf(fmt, args[0], *args[1:])
        case "println":
            return " ".join(go_string(a) for a in args) + "\n"
        case "print":
            return "".join(go_string(a) for a in args)
        case "eq" | "ne":
            need(2)
            equal = args[0] == args[1]
            return equal if name == "eq" else not equal
        case "not":
            need(1)
            return not _truth(args[0])
        case "and" | "or":
            if not args:
                raise _bad(fmt, f"{name} needs arguments")
            for a in args:
                if _truth(a) != (name == "and"):
                    return a
            return args[-1]
    raise _bad(fmt, f'function "{name}" not defined')


FUNCTIONS = ("json", "join", "split", "lower", "upper", "title", "truncate", "pad", "index",
             "len", "printf", "println", "print", "eq", "ne", "not", "and", "or")


# -- parsing ----------------------------------------------------------------------------------


@dataclass
class _Pipeline:
    commands: list[list[tuple[str, Any]]]  # each command: [(kind, value), ...]


@dataclass
class _Node:
    kind: str  # "text", "action", "if", "range", "with"
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _tokens(expr: str, fmt: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise _bad(fmt, f"unexpected {expr[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind) if kind else ""
        if kind == "str":
            out.append(("lit", text[1:-1] if text.startswith("`") else json.loads(text)))
        elif kind == "num":
            out.append(("lit", int(text)))
        elif kind == "word" and text in ("true", "false", "nil"):
            out.append(("lit", {"true": True, "false": False, "nil": None}[text]))
        elif kind is not None:
            out.append((kind, text))
    return out


def _pipeline(expr: str, fmt: str) -> _Pipeline:
    commands: list[list[tuple[str, Any]]] = [[]]
    depth = 0
    for tok in _tokens(expr, fmt):
        if tok[0] == "pipe" and depth == 0:
            commands.append([])
            continue
        if tok[0] == "lp":
            depth += 1
        elif tok[0] == "rp":
            depth -= 1
        commands[-1].append(tok)
    if any(not c for c in commands):
        raise _bad(fmt, "empty command in pipeline")
    return _Pipeline(commands)


def _split(fmt: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) pieces, with {{- -}} trimming applied."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = fmt.find("{{", pos)
        if start < 0:
            pieces.append(("text", fmt[pos:]))
            break
        end = fmt.find("}}", start + 2)
        if end < 0:
            raise _bad(fmt, "unclosed action")
        text = fmt[pos:start]
        action = fmt[start + 2:end]
        if action.startswith("- "):
            text = text.rstrip()
            action = action[2:]
        pos = end + 2
        if action.endswith(" -"):
            action = action[:-2]
            rest = fmt[pos:]
            pos += len(rest) - len(rest.lstrip())
        pieces.append(("text", text))
        pieces.append(("action", action.strip()))
    return [p for p in pieces if p != ("text", "")]


def parse(fmt: str) -> list[_Node]:
    nodes, _i, term, _rest = _parse_list(_split(fmt), 0, fmt)
    if term is not None:
        raise _bad(fmt, f"unexpected {{{{{term}}}}}")
    return nodes


def _parse_list(pieces: list[tuple[str, str]], i: int,
                fmt: str) -> tuple[list[_Node], int, str | None, str]:
    """Nodes up to an `else` or `end` (returned with what follows its keyword)."""
    nodes: list[_Node] = []
    while i < len(pieces):
        kind, text = pieces[i]
        i += 1
        if kind == "text":
            nodes.append(_Node("text", text=text))
            continue
        if text.startswith("/*"):
            continue  # a comment
        if not text:
            raise _bad(fmt, "empty action")
        word = text.split(None, 1)[0]
        rest = text[len(word):].strip()
        if word in ("else", "end"):
            return nodes, i, word, rest
        if word not in ("if", "range", "with"):
            nodes.append(_Node("action", pipe=_pipeline(text, fmt)))
            continue
        node = _Node(word, pipe=_pipeline(rest, fmt))
        node.body, i, term, rest = _parse_list(pieces, i, fmt)
        current = node
        while term == "else":
            if rest.startswith("if ") or rest.startswith("with "):
                inner_word = rest.split(None, 1)[0]
                inner = _Node(inner_word, pipe=_pipeline(rest[len(inner_word):], fmt))
                inner.body, i, term, rest = _parse_list(pieces, i, fmt)
                current.orelse = [inner]
                current = inner
            else:
                current.orelse, i, term, rest = _parse_list(pieces, i, fmt)
                if term == "else":
                    raise _bad(fmt, "expected {{end}} after {{else}}")
        if term != "end":
            raise _bad(fmt, f"unexpected EOF: {{{{{word}}}}} has no {{{{end}}}}")
        nodes.append(node)
    return nodes, i, None, ""


# -- evaluation -------------------------------------------------------------------------------


def _arg(tok: tuple[str, Any], dot: Any, root: Any, fmt: str) -> Any:
    kind, value = tok
    if kind == "lit":
        return value
    if kind == "field":
        return dot if value == "." else _field(dot, value, fmt)
    if kind == "word":
        if value not in FUNCTIONS:
            raise _bad(fmt, f'function "{value}" not defined')
        return _call(fmt, value, [])
    raise _bad(fmt, f"unexpected {value!r}")


def _command(cmd: list[tuple[str, Any]], dot: Any, root: Any, fmt: str,
             piped: Any = _NO_VALUE, has_piped: bool = False) -> Any:
    # Parenthesised sub-pipelines.
    flat: list[tuple[str, Any]] = []
    i = 0
    while i < len(cmd):
        if cmd[i][0] == "lp":
            depth, j = 1, i + 1
            while j < len(cmd) and depth:
                depth += {"lp": 1, "rp": -1}.get(cmd[j][0], 0)
                j += 1
            if depth:
                raise _bad(fmt, "unclosed (")
            inner = _evaluate_tokens(cmd[i + 1:j - 1], dot, root, fmt)
            flat.append(("lit", inner))
            i = j
            continue
        flat.append(cmd[i])
        i += 1
    head = flat[0]
    if head[0] == "word":
        if head[1] not in FUNCTIONS:
            raise _bad(fmt, f'function "{head[1]}" not defined')
        args = [_arg(t, dot, root, fmt) for t in flat[1:]]
        if has_piped:
            args.append(piped)
        return _call(fmt, head[1], args)
    if len(flat) > 1 or has_piped:
        raise _bad(fmt, f"can't give arguments to a non-function {head[1]!r}")
    return _arg(head, dot, root, fmt)


def _evaluate_tokens(tokens: list[tuple[str, Any]], dot: Any, root: Any, fmt: str) -> Any:
    commands: list[list[tuple[str, Any]]] = [[]]
    depth = 0
    for tok in tokens:
        if tok[0] == "pipe" and depth == 0:
            commands.append([])
            continue
        depth += {"lp": 1, "rp": -1}.get(tok[0], 0)
        commands[-1].append(tok)
    return _run(_Pipeline(commands), dot, root, fmt)


def _run(pipe: _Pipeline, dot: Any, root: Any, fmt: str) -> Any:
    value: Any = _NO_VALUE
    for n, cmd in enumerate(pipe.commands):
        value = _command(cmd, dot, root, fmt, value, has_piped=n > 0)
    return value


def _render(nodes: list[_Node], dot: Any, root: Any, fmt: str, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
            continue
        assert node.pipe is not None
        value = _run(node.pipe, dot, root, fmt)
        if node.kind == "action":
            out.append(go_string(value))
        elif node.kind == "if":
            _render(node.body if _truth(value) else node.orelse, dot, root, fmt, out)
        elif node.kind == "with":
            if _truth(value):
                _render(node.body, value, root, fmt, out)
            else:
                _render(node.orelse, dot, root, fmt, out)
        elif node.kind == "range":
            items = (list(value.values()) if isinstance(value, dict) else
                     list(value) if isinstance(value, list | tuple) else [])
            if not items:
                _render(node.orelse, dot, root, fmt, out)
            for item in items:
                _render(node.body, item, root, fmt, out)


class Template:
    """A parsed `--format`. `table` formats print a header row (`headers` names each
    field) and align their tab-separated columns as docker's formatter does."""

    def __init__(self, fmt: str, headers: dict[str, str] | None = None) -> None:
        self.source = fmt
        text = fmt
        self.table = text.startswith("table")
        if self.table:
            text = text[len("table"):]
        text = text.strip(" ")
        text = text.replace("\\t", "\t").replace("\\n", "\n")
        self.text = text
        self.nodes = parse(text)
        self.headers = headers or {}

    def render(self, value: Any) -> str:
        out: list[str] = []
        _render(self.nodes, value, value, self.source, out)
        return "".join(out)

    def header(self) -> str:
        """The header row: each field's name from `headers` (docker's header names)."""
        names = {k: v for k, v in self.headers.items()}

        def head(match: re.Match[str]) -> str:
            inner = match.group(1).strip()
            fields = re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", inner)
            if not fields:
                return ""
            return str(names.get(fields[-1], fields[-1].upper()))

        return re.sub(r"\{\{-?\s*(.*?)\s*-?\}\}", head, self.text)


def align(lines: list[str], *, minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's tabwriter as docker configures it (minwidth 10, padding 3): tab-terminated
    cells are padded to their column's width; the last cell of a line is not."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), max(minwidth, len(cell) + padding))
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("".join(cells) + row[-1])
    return out

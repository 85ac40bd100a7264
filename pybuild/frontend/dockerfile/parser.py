"""Dockerfile syntax layer: a port of BuildKit's ``frontend/dockerfile/parser``.

``parse`` turns a Dockerfile into a root :class:`Node` whose children are the
instructions, each a linked list (keyword node, then argument nodes), exactly
as BuildKit builds it, so ``Node.dump`` reproduces BuildKit's ``Dump()``.

Text model: Go strings are bytes. Input is decoded as UTF-8 with
``surrogateescape``, so invalid bytes survive as ``U+DC80..U+DCFF`` and
``.encode("utf-8", "surrogateescape")`` gives the exact bytes back.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from pybuild.errors import DockerfileSyntaxError, SourceLocation
from pybuild.frontend.dockerfile.directives import (
    DirectiveError,
    DirectiveParser,
    Directives,
    check_escape_token,
)
from pybuild.frontend.dockerfile.heredoc import (
    Heredoc,
    HeredocError,
    chomp_heredoc_content,
    heredocs_from_line,
    must_parse_heredoc,
    parse_heredoc,
)
from pybuild.frontend.dockerfile.line_parsers import (
    DISPATCH,
    LineParseError,
    parse_ignore,
    split_command,
)
from pybuild.gocompat import (
    from_bytes,
    go_lower,
    go_quote,
    go_quote_list,
    go_trimleft_space,
    go_trimspace,
    normalize,
    to_bytes,
)

__all__ = [
    "DEFAULT_ESCAPE_TOKEN",
    "MAX_LINE_SIZE",
    "Directives",
    "Heredoc",
    "Node",
    "ParseResult",
    "ParseWarning",
    "chomp_heredoc_content",
    "heredocs_from_line",
    "must_parse_heredoc",
    "parse",
    "parse_heredoc",
]

DEFAULT_ESCAPE_TOKEN = "\\"
MAX_LINE_SIZE = 65535  # bufio.MaxScanTokenSize - 1
_BOM = b"\xef\xbb\xbf"
_HEREDOC_INSTRUCTIONS = frozenset(("add", "copy", "run"))
_EMPTY_CONTINUATION_URL = "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"


@dataclass(eq=False, repr=False)
class Node:
    """BuildKit ``parser.Node``.

    For an instruction node ``value`` is the lower-cased keyword and
    ``keyword`` the keyword as written (BuildKit's ``Value``); argument nodes
    hang off ``next``. Only the root and the ONBUILD holder have ``children``.
    """

    value: str = ""
    next: Node | None = None
    children: list[Node] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    attributes: dict[str, bool] = field(default_factory=dict)
    heredocs: list[Heredoc] = field(default_factory=list)
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    keyword: str = ""
    prev_comment: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        """Values of the ``next`` chain (an ONBUILD holder contributes "")."""
        out: list[str] = []
        node = self.next
        while node is not None:
            out.append(node.value)
            node = node.next
        return out

    @property
    def is_json(self) -> bool:
        return bool(self.attributes.get("json"))

    def dump(self) -> str:
        """BuildKit ``Node.Dump()``.

        Emits pieces into one list instead of concatenating nested dumps, so
        deep ONBUILD chains stay linear and need no recursion.
        """
        out: list[str] = []
        stack: list[str | Node] = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
            else:
                stack.extend(reversed(item._dump_items()))
        return "".join(out)

    def _dump_items(self) -> list[str | Node]:
        """This node's dump as strings and nested nodes, already trimmed the
        way ``strings.TrimSpace`` trims the Go result."""
        head = go_lower(self.value)
        if self.flags:
            head += " " + go_quote_list(self.flags)
        head = go_trimleft_space(head)
        items: list[str | Node] = [head] if head else []
        for child in self.children:
            items += ["(", child, ")\n"]
        nxt = self.next
        while nxt is not None:
            items += [" ", nxt if nxt.children else go_quote(nxt.value)]
            nxt = nxt.next
        if not head and items and items[0] == " ":
            items.pop(0)
        if items and items[-1] == ")\n":
            items[-1] = ")"
        return items

    def __repr__(self) -> str:
        return f"Node({self.dump()!r}, lines={self.start_line}-{self.end_line})"


@dataclass
class ParseWarning:
    """A non-fatal finding, e.g. an empty continuation line."""

    message: str
    line: int
    detail: str = ""
    url: str = ""


@dataclass
class ParseResult:
    ast: Node
    warnings: list[ParseWarning]
    escape_token: str
    directives: Directives


def parse(data: bytes | bytearray | str, filename: str = "Dockerfile") -> ParseResult:
    """Parse a Dockerfile the way BuildKit's ``parser.Parse`` does.

    ``str`` input is treated as the UTF-8 bytes it encodes (escaped bytes from
    ``surrogateescape`` included). Raises :class:`DockerfileSyntaxError` (and
    nothing else) on bad input.
    """
    raw = to_bytes(data) if isinstance(data, str) else bytes(data)
    lines, too_long = _scan_lines(raw)
    parser = _Parser(lines, filename)
    result = parser.run()
    if too_long:
        # bufio.Scanner stops at the long line; BuildKit reports it last.
        raise _error(
            f"dockerfile line greater than max allowed size of {MAX_LINE_SIZE}",
            filename,
            len(lines) + 1,
            text=from_bytes(too_long[:200]),
        )
    return result


def _scan_lines(raw: bytes) -> tuple[list[bytes], bytes]:
    """Split like BuildKit's scanLines (line endings kept); stop at the first
    line bufio.Scanner cannot hold and return it as the second value."""
    lines = raw.split(b"\n")
    tail = lines.pop()
    out = [line + b"\n" for line in lines]
    if tail:
        out.append(tail)
    for i, line in enumerate(out):
        if len(line.rstrip(b"\n")) > MAX_LINE_SIZE:
            return out[:i], line
    return out, b""


def _error(
    message: str,
    filename: str,
    start: int,
    end: int = 0,
    *,
    instruction: str = "",
    text: str = "",
) -> DockerfileSyntaxError:
    start = max(start, 1)
    location = SourceLocation(filename, start, max(end, start), instruction, text)
    return DockerfileSyntaxError(message, location=location)


class _Parser:
    """The state of one ``Parse`` call: a port of BuildKit's main loop."""

    def __init__(self, lines: list[bytes], filename: str) -> None:
        self.lines = lines
        self.filename = filename
        self.index = 0  # next line to read
        self.current = 0  # 1-based number of the last line read
        self.escape = DEFAULT_ESCAPE_TOKEN
        self.directives = DirectiveParser()
        self.root = Node(start_line=-1)
        self.warnings: list[ParseWarning] = []
        self.comments: list[str] = []

    def run(self) -> ParseResult:
        while self.index < len(self.lines):
            self._instruction()
        if self.root.start_line < 0:
            raise _error("file with no instructions", self.filename, self.current)
        return ParseResult(
            ast=self.root,
            warnings=self.warnings,
            escape_token=self.escape,
            directives=self.directives.found,
        )

    def _read(self) -> str:
        raw = self.lines[self.index]
        if self.index == 0:
            raw = raw.removeprefix(_BOM)
        self.index += 1
        return from_bytes(raw)

    def _instruction(self) -> None:
        """Read one logical line (plus heredoc bodies) and add its node."""
        text = self._read()
        self._note_comment(text)
        token, is_directive = self._process_line(text, strip_left=True)
        if is_directive:
            self.comments = self.comments[:-1]  # directives are not comments
        self.current += 1
        start = self.current
        token, end_of_line = self._trim_continuation(token)
        if end_of_line and not token:
            return  # blank line or comment
        line = token if end_of_line else self._continuation(token)
        child = self._node(line, start)
        child.prev_comment = self.comments
        self._read_heredocs(child, line, start)
        self._add_child(child, start)
        self.comments = []

    def _note_comment(self, text: str) -> None:
        if _is_comment(text):
            comment = go_trimspace(text[1:])
            # An empty "#" line resets the comments that describe the next node.
            self.comments = [*self.comments, comment] if comment else []

    def _continuation(self, first: str) -> str:
        """Join continuation lines; comments and blank lines are skipped."""
        parts = [first]
        has_empty = False
        end_of_line = False
        while not end_of_line and self.index < len(self.lines):
            text = self._read()
            token, _ = self._process_line(text, strip_left=False)
            self.current += 1
            if _is_comment(text):
                continue
            if not go_trimleft_space(token):
                has_empty = True
                continue
            token, end_of_line = self._trim_continuation(token)
            parts.append(token)
        # Lines are decoded one by one: re-join runes split across them.
        line = normalize("".join(parts))
        if has_empty:
            self.warnings.append(
                ParseWarning(
                    message="Empty continuation line found in: " + line,
                    line=self.current,
                    detail="Empty continuation lines will become errors in a future release",
                    url=_EMPTY_CONTINUATION_URL,
                )
            )
        return line

    def _process_line(self, text: str, *, strip_left: bool) -> tuple[str, bool]:
        """``processLine``: trim, look for a directive, drop comments."""
        token = text.rstrip("\r\n")
        if strip_left:
            token = go_trimleft_space(token)
        is_directive = False
        try:
            found = self.directives.parse_line(token)
            if found is not None:
                if found[0] == "escape":
                    self.escape = check_escape_token(found[1])
                is_directive = True
        except DirectiveError as err:
            raise _error(str(err), self.filename, self.current + 1, text=token) from None
        return ("" if _is_comment(token) else token), is_directive

    def _trim_continuation(self, line: str) -> tuple[str, bool]:
        """Strip a trailing escape (plus blanks); False means "continues"."""
        body = line.rstrip(" \t")
        if body.endswith(self.escape):
            body = body[:-1]
            # A doubled escape is a literal escape, not a continuation.
            if not body or body[-1] != self.escape:
                return body, False
        return line, True

    def _node(self, line: str, start: int) -> Node:
        try:
            return _node_from_line(line, self.escape)
        except LineParseError as err:
            keyword = split_command(line)[0].upper()
            raise _error(
                str(err),
                self.filename,
                start,
                self.current,
                instruction=keyword,
                text=line,
            ) from None

    def _read_heredocs(self, child: Node, line: str, start: int) -> None:
        if "<<" not in line or not _can_contain_heredoc(child):
            return
        try:
            docs = heredocs_from_line(line)
        except HeredocError as err:
            raise self._heredoc_error(str(err), child, line, start) from None
        for doc in docs:
            terminator = to_bytes(doc.name)
            body: list[bytes] = []
            while True:
                if self.index >= len(self.lines):
                    raise self._heredoc_error("unterminated heredoc", child, line, start)
                raw = self.lines[self.index]
                self.index += 1
                self.current += 1
                candidate = raw.rstrip(b"\r\n")
                if doc.chomp:
                    candidate = candidate.lstrip(b"\t")
                if candidate == terminator:
                    break
                body.append(raw)
            doc.content = from_bytes(b"".join(body))
            child.heredocs.append(doc)

    def _heredoc_error(
        self, message: str, child: Node, line: str, start: int
    ) -> DockerfileSyntaxError:
        return _error(
            message,
            self.filename,
            start,
            self.current,
            instruction=child.keyword.upper(),
            text=line,
        )

    def _add_child(self, child: Node, start: int) -> None:
        child.start_line = start
        child.end_line = self.current
        holder = child.next
        while holder is not None and holder.children:
            # ONBUILD triggers: give the nested nodes the same lines.
            inner = holder.children[0]
            inner.start_line, inner.end_line = start, self.current
            holder = inner.next
        if self.root.start_line < 0:
            self.root.start_line = start
        self.root.end_line = self.current
        self.root.children.append(child)


def _is_comment(text: str) -> bool:
    return go_trimleft_space(text).startswith("#")


def _can_contain_heredoc(node: Node) -> bool:
    if node.value == "onbuild" and node.next is not None and node.next.children:
        node = node.next.children[0]
    return node.value in _HEREDOC_INSTRUCTIONS and not node.is_json


def _node_from_line(line: str, escape: str) -> Node:
    """``newNodeFromLine``; ONBUILD nesting is unrolled into a loop."""
    chain: list[Node] = []
    rest = line
    while True:
        keyword, flags, args = split_command(rest)
        node = Node(value=go_lower(keyword), keyword=keyword, original=rest, flags=flags)
        chain.append(node)
        if node.value != "onbuild":
            values, is_json = DISPATCH.get(node.value, parse_ignore)(args, escape)
            node.next = _arg_chain(values)
            if is_json:
                node.attributes = {"json": True}
            break
        if not args:
            break
        rest = args
    for outer, inner in itertools.pairwise(chain):
        outer.next = Node(children=[inner])
    return chain[0]


def _arg_chain(values: list[str]) -> Node | None:
    head: Node | None = None
    for value in reversed(values):
        head = Node(value=value, next=head)
    return head

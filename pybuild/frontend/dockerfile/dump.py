"""BuildKit-compatible AST dumps (the format of the parser corpus ``result``
files, also printed by BuildKit's ``parser/dumper`` tool)."""

from __future__ import annotations

from pybuild.frontend.dockerfile.parser import Node, ParseResult
from pybuild.gocompat import go_quote, go_quote_list

__all__ = ["dump_ast", "dump_node", "go_quote", "go_quote_list"]


def dump_node(node: Node) -> str:
    """One instruction as BuildKit's ``Node.Dump()`` prints it (no parens)."""
    return node.dump()


def dump_ast(result: ParseResult | Node) -> str:
    """``AST.Dump() + "\\n"``: one ``(instruction ...)`` per line."""
    root = result.ast if isinstance(result, ParseResult) else result
    return root.dump() + "\n"

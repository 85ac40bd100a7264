"""A Definition: the op DAG of one build target plus metadata outside the digests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pybuild.digest import Digest
from pybuild.llb.ops import Input, Op, encode, op_digest


@dataclass(frozen=True, slots=True, kw_only=True)
class OpMetadata:
    """What the frontend says about an op, outside its digest. `description` is the whole
    progress name; the typed fields are its parts, so that nobody re-parses it."""

    description: str = ""  # e.g. "[linux/arm64 build 2/4] RUN make"
    stage: str = ""
    filename: str = ""
    start_line: int = 0
    end_line: int = 0
    ignore_cache: bool = False
    step: str = ""  # the step label, e.g. "[linux/arm64 build 2/4]"; "" when unnumbered
    instruction: str = ""  # the instruction keyword, e.g. "RUN" ("FROM" for a base image)
    text: str = ""  # the description after the label, e.g. "RUN make"
    platform: str = ""  # the platform the op is built for, e.g. "linux/arm64"


@dataclass(slots=True)
class DefinitionBuilder:
    """Collects ops; identical ops are stored once."""

    ops: dict[Digest, Op] = field(default_factory=dict)
    metadata: dict[Digest, OpMetadata] = field(default_factory=dict)

    def add(self, op: Op, meta: OpMetadata | None = None) -> Input:
        digest = op_digest(op)
        self.ops.setdefault(digest, op)
        if meta is not None and digest not in self.metadata:
            self.metadata[digest] = meta
        return Input(op=digest)

    def build(self, output: Input | None) -> Definition:
        keep: dict[Digest, Op] = {}
        stack = [output.op] if output is not None else []
        while stack:
            d = stack.pop()
            if d in keep:
                continue
            keep[d] = self.ops[d]
            stack.extend(i.op for i in keep[d].inputs())
        return Definition(
            ops=keep,
            metadata={d: m for d, m in self.metadata.items() if d in keep},
            output=output,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Definition:
    ops: dict[Digest, Op]
    metadata: dict[Digest, OpMetadata]
    output: Input | None  # None: the result is an empty filesystem

    def topological(self) -> list[Digest]:
        order: list[Digest] = []
        seen: set[Digest] = set()

        def visit(d: Digest) -> None:
            if d in seen:
                return
            seen.add(d)
            for i in self.ops[d].inputs():
                visit(i.op)
            order.append(d)

        for d in sorted(self.ops):
            visit(d)
        return order

    def to_json(self) -> dict[str, Any]:
        ops = []
        for d in self.topological():
            op = self.ops[d]
            meta = self.metadata.get(d, OpMetadata())
            ops.append({
                "digest": str(d),
                "kind": op.kind,
                "inputs": [[str(i.op), i.index] for i in op.inputs()],
                "op": json.loads(encode(op))["op"],
                "description": meta.description,
                "source": {"file": meta.filename, "start_line": meta.start_line,
                           "end_line": meta.end_line} if meta.filename else None,
            })
        return {"output": [str(self.output.op), self.output.index] if self.output else None,
                "ops": ops}

    def to_dot(self) -> str:
        lines = ["digraph pybuild {", "  rankdir=BT;", "  node [shape=box, fontname=monospace];"]
        for d in self.topological():
            meta = self.metadata.get(d, OpMetadata())
            label = (meta.description or self.ops[d].kind).replace('"', '\\"')
            lines.append(f'  "{d.short}" [label="{label}\\n{d.short}"];')
            for i in self.ops[d].inputs():
                lines.append(f'  "{i.op.short}" -> "{d.short}";')
        lines.append("}")
        return "\n".join(lines) + "\n"

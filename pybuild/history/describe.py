"""The static facts of a build's vertices, read off its op DAG."""

from __future__ import annotations

from collections.abc import Callable

from pybuild.history.model import VertexInfo
from pybuild.llb import Definition, OpMetadata, SourceOp


def _command(description: str) -> str:
    """"[build 2/4] RUN make" -> "RUN make" (the progress prefix is not the instruction)."""
    if description.startswith("[") and "] " in description:
        return description.split("] ", 1)[1]
    return description


def _lines(dockerfile: bytes | str | None) -> list[str]:
    if dockerfile is None:
        return []
    text = dockerfile.decode("utf-8", "replace") if isinstance(dockerfile, bytes) \
        else dockerfile
    return text.splitlines()


def describe(definition: Definition, *, platform: str = "",
             dockerfile: bytes | str | None = None,
             redact: Callable[[str], str] = str) -> list[VertexInfo]:
    lines = _lines(dockerfile)
    out = []
    for digest in definition.topological():
        op = definition.ops[digest]
        meta = definition.metadata.get(digest, OpMetadata())
        name = meta.description or op.kind
        source = ""
        if lines and meta.start_line > 0:
            source = "\n".join(lines[meta.start_line - 1:max(meta.end_line, meta.start_line)])
        silent = isinstance(op, SourceOp) and op.identifier.startswith("local://")
        out.append(VertexInfo(
            digest=str(digest), name=redact(name), kind=op.kind, stage=meta.stage,
            platform=platform, inputs=tuple(dict.fromkeys(str(i.op) for i in op.inputs())),
            command=redact(_command(name)), filename=meta.filename,
            start_line=meta.start_line, end_line=meta.end_line, source=redact(source),
            silent=silent))
    return out

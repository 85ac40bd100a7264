"""MergeOp (`COPY --link`): filesystems stacked; nothing runs, the layers are reused."""

from __future__ import annotations

from collections.abc import Sequence

from pybuild.builder.result import Solved


def merge(inputs: Sequence[Solved]) -> Solved:
    """The layers of each input in turn, bottom first."""
    layers = tuple(layer for solved in inputs for layer in solved.layers)
    return Solved(layers=layers, created=max((s.created for s in inputs), default=0.0))

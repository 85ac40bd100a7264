"""`COPY dir/ /new/dest/` straight into a layer blob: now `pybuild.context.layer`."""

# moved to pybuild/context/layer.py; the lead removes this shim
from __future__ import annotations

from pybuild.context.layer import ContextLayer, layout, write_context_layer

__all__ = ["ContextLayer", "layout", "write_context_layer"]

"""Errors raised by the layer package."""

from __future__ import annotations

from pybuild.errors import UserError


class LayerError(UserError):
    """A layer tar is malformed or unsafe, or a tree cannot be turned into a layer."""

    code = "layer"

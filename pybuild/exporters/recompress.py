"""Layer compression at export time: now `pybuild.layers.recompress`."""

# moved to pybuild/layers/recompress.py; the lead removes this shim
from __future__ import annotations

from pybuild.layers.recompress import KINDS, compress_image, compress_layer

__all__ = ["KINDS", "compress_image", "compress_layer"]

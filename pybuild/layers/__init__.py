"""pybuild.layers: layer tars from overlay upper dirs and trees, and back.

Re-exports the API the executor uses; each submodule has one job.
"""

from __future__ import annotations

from pybuild.layers.apply import ApplyStats, apply_layer, apply_layer_file
from pybuild.layers.compress import (
    CompressingWriter,
    LayerResult,
    compress_stream,
    write_diff_compressed,
    write_tree_compressed,
)
from pybuild.layers.decompress import detect_compression, open_layer_stream
from pybuild.layers.diff import write_diff_from_upper, write_tree
from pybuild.layers.errors import LayerError
from pybuild.layers.tarwriter import LayerWriter

__all__ = [
    "ApplyStats",
    "CompressingWriter",
    "LayerError",
    "LayerResult",
    "LayerWriter",
    "apply_layer",
    "apply_layer_file",
    "compress_stream",
    "detect_compression",
    "open_layer_stream",
    "write_diff_compressed",
    "write_diff_from_upper",
    "write_tree",
    "write_tree_compressed",
]

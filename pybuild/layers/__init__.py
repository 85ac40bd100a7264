"""pybuild.layers: layer tars from overlay upper dirs and trees, and back.

Re-exports the API the executor uses; each submodule has one job.
"""

from __future__ import annotations

from pybuild.layers.apply import (
    HOST_SAFE,
    KEEP_ALL,
    ApplyStats,
    FilePrivileges,
    apply_layer,
    apply_layer_file,
)
from pybuild.layers.compress import (
    CompressingWriter,
    LayerResult,
    compress_stream,
    write_diff_compressed,
    write_tree_compressed,
)
from pybuild.layers.decompress import (
    DEFAULT_LIMITS,
    NO_LIMITS,
    ExpansionLimits,
    detect_compression,
    open_layer_stream,
)
from pybuild.layers.diff import write_diff_from_upper, write_tree
from pybuild.layers.errors import LayerError, LayerTooLargeError, LayerWriteError
from pybuild.layers.tarwriter import LayerWriter

__all__ = [
    "DEFAULT_LIMITS",
    "HOST_SAFE",
    "KEEP_ALL",
    "NO_LIMITS",
    "ApplyStats",
    "CompressingWriter",
    "ExpansionLimits",
    "FilePrivileges",
    "LayerError",
    "LayerResult",
    "LayerTooLargeError",
    "LayerWriteError",
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

"""The op DAG shared by the frontend and the builder."""

from pybuild.llb.definition import Definition, DefinitionBuilder, OpMetadata
from pybuild.llb.ops import (
    CacheMountOpts,
    Chown,
    CopyAction,
    ExecOp,
    FileAction,
    FileOp,
    Input,
    MergeOp,
    MkdirAction,
    MkfileAction,
    Mount,
    Op,
    SecretOpts,
    SourceOp,
    SSHOpts,
    encode,
    op_digest,
)

__all__ = [
    "CacheMountOpts", "Chown", "CopyAction", "Definition", "DefinitionBuilder", "ExecOp",
    "FileAction", "FileOp", "Input", "MergeOp", "MkdirAction", "MkfileAction", "Mount", "Op",
    "OpMetadata", "SSHOpts", "SecretOpts", "SourceOp", "encode", "op_digest",
]

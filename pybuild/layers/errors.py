"""Errors raised by the layer package."""

from __future__ import annotations

import errno
import os

from pybuild.errors import UserError

_HINTS = {
    errno.ENOSPC: "free space on that file system, or write somewhere with more room",
    errno.EDQUOT: "the disk quota of this user is exhausted",
    errno.ENAMETOOLONG: "a path component is longer than 255 bytes, the limit of Linux "
    "file systems; the image cannot be unpacked here",
    errno.EROFS: "the destination is on a read-only file system",
}


class LayerError(UserError):
    """A layer tar is malformed or unsafe, or a tree cannot be turned into a layer."""

    code = "layer"


def shown_name(name: bytes | str, limit: int = 80) -> str:
    """An entry name for a one-line message: decoded, and cut when it is absurdly long."""
    text = os.fsdecode(name)
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 20]!r}... ({len(os.fsencode(name))} bytes)"


class LayerWriteError(LayerError):
    """The file system refused an entry of a layer or an export: full disk, quota, a name
    too long, a read-only destination... Carries the entry and the cause."""

    code = "layer-write"

    def __init__(self, *, doing: str, dest: str, entry: bytes | str, cause: OSError) -> None:
        """`doing`: what was under way, e.g. "unpacking layer sha256:..."."""
        reason = cause.strerror or str(cause)
        where = f" {shown_name(entry)}" if entry else ""
        super().__init__(
            f"{doing}: cannot write{where} into {dest}: {reason}",
            hint=_HINTS.get(cause.errno or 0),
        )
        self.entry = entry
        self.dest = dest
        self.errno = cause.errno


class LayerTooLargeError(LayerError):
    """A layer expands far beyond its compressed size (a decompression bomb), or past an
    absolute limit the caller set."""

    code = "layer-too-large"

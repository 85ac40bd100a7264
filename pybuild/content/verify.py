"""Reading a blob while checking it against what its descriptor says (digest and size).

The one verifying reader of the tree: exports and layout imports read blobs through it,
and the sandbox unpacks layers through it.
"""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO, Protocol

from pybuild.digest import Digest
from pybuild.errors import IntegrityError

_CHUNK = 1 << 20


class Expected(Protocol):
    """What a blob must be (a Descriptor, or a layer the sandbox unpacks)."""

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int: ...


def blob_too_big(expected: Expected, where: str) -> IntegrityError:
    return IntegrityError(f"blob {expected.digest} in the {where}: size mismatch "
                          f"(descriptor says {expected.size} bytes, blob is bigger)")


def check_blob(expected: Expected, size: int, actual: Digest, *, where: str) -> None:
    """A blob read or copied whole, against its descriptor."""
    if size != expected.size:
        raise IntegrityError(
            f"blob {expected.digest} in the {where}: size mismatch "
            f"(descriptor says {expected.size} bytes, blob has {size})"
        )
    if actual != expected.digest:
        raise IntegrityError(
            f"blob {expected.digest} in the {where}: digest mismatch (content hashes to "
            f"{actual})"
        )


class VerifyingReader(io.RawIOBase):
    """Passes a blob through, and at EOF checks it against its descriptor (a blob that
    grows past its size fails as soon as it does)."""

    def __init__(self, src: BinaryIO, expected: Expected, where: str) -> None:
        self._src = src
        self._expected = expected
        self._where = where
        self._sha = hashlib.sha256()
        self._size = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._src.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._sha.update(memoryview(b)[:n])
            self._size += n
            if self._size > self._expected.size:
                raise blob_too_big(self._expected, self._where)
        else:
            self.finish()
        return n or 0

    def finish(self) -> None:
        """Check what was read (the whole blob, at EOF) against the descriptor."""
        if self.verified:
            return
        check_blob(self._expected, self._size, Digest.from_hex(self._sha.hexdigest()),
                   where=self._where)
        self.verified = True

    def drain(self) -> None:
        """Read the rest of the blob (what a reader above left: a gzip trailer, tar
        padding), then check it."""
        buf = bytearray(_CHUNK)
        while self.readinto(buf):
            pass
        self.finish()

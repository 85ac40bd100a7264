"""Verified reads: a blob checked against its expected digest and size while it streams.

The one reader for every place where bytes are taken on the word of a descriptor: the
OCI layout and archive readers, the exporters' copies out of the store, the sandbox's
layer apply, push. A blob longer than its descriptor fails as soon as the extra byte
arrives, so a hostile layout cannot make pybuild read (or store) without bound.

Standard library only (and `pybuild.errors`): the sandbox daemon imports it on its
start-up path.
"""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

from pybuild.errors import IntegrityError

_CHUNK = 1 << 20


def _hasher(digest: str) -> hashlib._Hash:
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise IntegrityError(f"blob {digest}: unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def size_mismatch(digest: str, expected: int, actual: int | None, where: str) -> IntegrityError:
    has = "is bigger" if actual is None else f"has {actual}"
    return IntegrityError(f"blob {digest} in the {where}: size mismatch "
                          f"(descriptor says {expected} bytes, blob {has})")


def check_blob(digest: str, size: int | None, *, actual_digest: str, actual_size: int,
               where: str) -> None:
    """A blob read or copied whole, against what its descriptor says."""
    if size is not None and actual_size != size:
        raise size_mismatch(digest, size, actual_size, where)
    if actual_digest != digest:
        raise IntegrityError(
            f"blob {digest} in the {where}: digest mismatch (content hashes to {actual_digest})"
        )


def check_bytes(data: bytes, digest: str, size: int | None, *, where: str) -> None:
    h = _hasher(digest)
    h.update(data)
    check_blob(digest, size, actual_digest=f"{h.name}:{h.hexdigest()}",
               actual_size=len(data), where=where)


class VerifyingReader(io.RawIOBase):
    """Passes a blob through; at EOF (or `finish`) checks it against `digest` and `size`.

    `size=None` checks the digest alone (the sandbox is given only the digest)."""

    def __init__(self, src: BinaryIO, digest: str, size: int | None, *, where: str) -> None:
        self._src = src
        self._digest = digest
        self._size = size
        self._where = where
        self._hash = _hasher(digest)
        self.read_bytes = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._src.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._hash.update(memoryview(b)[:n])
            self.read_bytes += n
            if self._size is not None and self.read_bytes > self._size:
                raise size_mismatch(self._digest, self._size, None, self._where)
        else:
            self.finish()
        return n or 0

    @property
    def actual_digest(self) -> str:
        """The digest of what has been read so far."""
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def finish(self) -> None:
        """Check what was read; raises IntegrityError unless it is the whole blob."""
        if self.verified:
            return
        check_blob(self._digest, self._size, actual_digest=self.actual_digest,
                   actual_size=self.read_bytes, where=self._where)
        self.verified = True

    def drain(self) -> None:
        """Read the rest (a compressed stream's trailer, tar padding) and check it all."""
        buf = bytearray(_CHUNK)
        while self.readinto(buf):
            pass
        self.finish()

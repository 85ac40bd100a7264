"""The Digest value type and hashing helpers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import BinaryIO

from pybuild.errors import UserError

_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")
_HEX_LEN = {"sha256": 64, "sha512": 128}


class Digest(str):
    """A content digest "algorithm:hex". A str subclass so it serialises as itself."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        m = _DIGEST_RE.match(value)
        if not m or len(m.group(2)) != _HEX_LEN[m.group(1)]:
            raise UserError(f"invalid digest {value!r}", code="bad-digest")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        return self.hex[:12]

    @classmethod
    def from_bytes(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hex(cls, hexdigest: str) -> Digest:
        return cls("sha256:" + hexdigest)

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes]) -> Digest:
        h = hashlib.sha256()
        for c in chunks:
            h.update(c)
        return cls("sha256:" + h.hexdigest())

    @classmethod
    def from_stream(cls, stream: BinaryIO, bufsize: int = 1 << 20) -> tuple[Digest, int]:
        h = hashlib.sha256()
        size = 0
        while chunk := stream.read(bufsize):
            h.update(chunk)
            size += len(chunk)
        return cls("sha256:" + h.hexdigest()), size

    @classmethod
    def from_file(cls, path: str) -> tuple[Digest, int]:
        with open(path, "rb") as f:
            return cls.from_stream(f)


def is_digest(value: str) -> bool:
    m = _DIGEST_RE.match(value)
    return bool(m) and len(m.group(2)) == _HEX_LEN[m.group(1)]  # type: ignore[union-attr]

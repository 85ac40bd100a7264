"""Open a layer blob whatever its compression, recognised by magic bytes."""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO, Literal

import zstandard

from pybuild.layers.errors import LayerError
from pybuild.layers.zstdframes import ZstdFrameTracker

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect_compression(head: bytes) -> Literal["gzip", "zstd", "none"]:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read to sniff its type."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class _ZstdChecked:
    """The compressed side of a zstd stream; EOF in the middle of a frame is an error."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._frames = ZstdFrameTracker()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._frames.feed(data)
        elif not self._frames.at_frame_boundary:
            raise LayerError("corrupt compressed layer: zstd stream is truncated")
        return data


class _Closing(io.RawIOBase):
    """Reads from a decompressor and closes the underlying file with it."""

    def __init__(self, reader: BinaryIO, owned: list[BinaryIO]) -> None:
        self._reader = reader
        self._owned = owned

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        # Pass big reads straight through: no copy into a caller buffer.
        try:
            if size is None or size < 0:
                return self._reader.read()
            return self._reader.read(size)
        except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:
            raise LayerError(f"corrupt compressed layer: {e}") from None

    def close(self) -> None:
        if not self.closed:
            for f in (self._reader, *self._owned):
                f.close()
        super().close()


def decompressed(stream: BinaryIO, *, close_source: bool = False) -> BinaryIO:
    """Wrap `stream` so that reads return the uncompressed tar bytes."""
    head = stream.read(4)
    while len(head) < 4:
        more = stream.read(4 - len(head))
        if not more:
            break
        head += more
    source: BinaryIO = io.BufferedReader(_Prefixed(head, stream), 1 << 20)
    owned = [stream] if close_source else []
    kind = detect_compression(head)
    if kind == "gzip":
        reader: BinaryIO = gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[assignment]
        return _Closing(reader, owned)  # type: ignore[return-value]
    if kind == "zstd":
        checked: BinaryIO = _ZstdChecked(source)  # type: ignore[assignment]
        zreader = zstandard.ZstdDecompressor().stream_reader(
            checked, read_size=1 << 20, read_across_frames=True, closefd=False
        )
        return _Closing(zreader, owned)  # type: ignore[return-value]
    return _Closing(source, owned)  # type: ignore[return-value]


def open_layer_stream(path: str) -> BinaryIO:
    """Open a layer blob (gzip, zstd or plain tar) as an uncompressed byte stream."""
    f = open(path, "rb")  # noqa: SIM115 - closed by the returned stream
    try:
        return decompressed(f, close_source=True)
    except BaseException:
        f.close()
        raise

"""Open a layer blob whatever its compression, recognised by magic bytes.

Decompression is bounded: 10 GiB of zeros fit in a 10 MB gzip blob, and an image author
would otherwise decide how much disk an unpack fills. `ExpansionLimits` caps the ratio of
uncompressed to compressed bytes once a stream has produced more than a floor, and
optionally the uncompressed size itself. The defaults never trip on real layers (base
images expand 3-4x, text-heavy ones about 10x; deflate cannot exceed about 1030x, so only
streams that are nearly all one repeated byte reach 100x) while a bomb is stopped after
writing at most 100x its own size.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Literal

import zstandard

from pybuild.layers.errors import LayerError, LayerTooLargeError
from pybuild.layers.zstdframes import ZstdFrameTracker

_MIB = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpansionLimits:
    """How far a compressed layer may expand before it is refused as a bomb."""

    max_ratio: float | None = 100.0  # uncompressed / compressed bytes; None: no ratio limit
    ratio_floor: int = 256 * _MIB  # the ratio applies once this much has been produced
    max_bytes: int | None = None  # absolute cap on the uncompressed size; None: no cap

    def exceeded(self, produced: int, consumed: int) -> bool:
        if self.max_bytes is not None and produced > self.max_bytes:
            return True
        if self.max_ratio is None or produced <= self.ratio_floor:
            return False
        return produced > self.max_ratio * max(consumed, 1)


DEFAULT_LIMITS = ExpansionLimits()
NO_LIMITS = ExpansionLimits(max_ratio=None)


def _size(n: int) -> str:
    return f"{n / _MIB:.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.1f} GiB"

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
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
        self.consumed = len(head)  # compressed bytes taken from `rest`, head included

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
        self.consumed += n
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
    """Reads from a decompressor, enforces the expansion limits, and closes the
    underlying file with it."""

    def __init__(
        self,
        reader: BinaryIO,
        owned: list[BinaryIO],
        *,
        source: _Prefixed,
        kind: str,
        limits: ExpansionLimits,
        what: str,
    ) -> None:
        self._reader = reader
        self._owned = owned
        self._source = source
        self._kind = kind
        self._limits = limits
        self._what = what
        self.produced = 0

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
                data = self._reader.read()
            else:
                data = self._reader.read(size)
        except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:
            raise LayerError(f"corrupt compressed layer: {e}") from None
        except (OSError, lzma.LZMAError) as e:
            if self._kind not in ("bzip2", "xz"):  # bz2 reports bad data as OSError
                raise
            raise LayerError(f"corrupt {self._kind} data: {e}") from None
        self.produced += len(data)
        consumed = self._source.consumed if self._kind != "none" else self.produced
        if self._limits.exceeded(self.produced, consumed):
            raise self._too_large(consumed)
        return data

    def _too_large(self, consumed: int) -> LayerTooLargeError:
        limits = self._limits
        if limits.max_bytes is not None and self.produced > limits.max_bytes:
            return LayerTooLargeError(
                f"{self._what} expands past the limit of {_size(limits.max_bytes)}; "
                "refusing to unpack it"
            )
        return LayerTooLargeError(
            f"{self._what} is a decompression bomb: {_size(consumed)} of {self._kind} "
            f"data expanded past {_size(self.produced)} (more than {limits.max_ratio:g}x); "
            "refusing to unpack it",
            hint="real layers expand 3-10x; this one is nearly all one repeated byte",
        )

    def close(self) -> None:
        if not self.closed:
            for f in (self._reader, *self._owned):
                f.close()
        super().close()


def decompressed(
    stream: BinaryIO,
    *,
    close_source: bool = False,
    limits: ExpansionLimits = DEFAULT_LIMITS,
    what: str = "a layer",
    archive_formats: bool = False,
) -> BinaryIO:
    """Wrap `stream` so that reads return the uncompressed tar bytes; a stream expanding
    beyond `limits` raises LayerTooLargeError naming `what`. `archive_formats`: bzip2 and
    xz are recognised too (build-context tarballs, ADD and `import` archives; never
    layers, which OCI defines as gzip or zstd)."""
    want = 6 if archive_formats else 4
    head = stream.read(want)
    while len(head) < want:
        more = stream.read(want - len(head))
        if not more:
            break
        head += more
    prefixed = _Prefixed(head, stream)
    source: BinaryIO = io.BufferedReader(prefixed, 1 << 20)
    owned = [stream] if close_source else []
    kind: str = detect_compression(head)
    if archive_formats and head.startswith(BZIP2_MAGIC):
        kind = "bzip2"
    elif archive_formats and head.startswith(XZ_MAGIC):
        kind = "xz"
    reader: BinaryIO
    if kind == "bzip2":
        reader = bz2.BZ2File(source)  # type: ignore[assignment]
    elif kind == "xz":
        reader = lzma.LZMAFile(source)  # type: ignore[assignment]  # noqa: SIM115 - closed by _Closing
    elif kind == "gzip":
        reader = gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[assignment]
    elif kind == "zstd":
        checked: BinaryIO = _ZstdChecked(source)  # type: ignore[assignment]
        reader = zstandard.ZstdDecompressor().stream_reader(
            checked, read_size=1 << 20, read_across_frames=True, closefd=False
        )
    else:
        reader = source
    wrapped = _Closing(reader, owned, source=prefixed, kind=kind, limits=limits, what=what)
    return wrapped  # type: ignore[return-value]


def open_layer_stream(path: str, *, limits: ExpansionLimits = DEFAULT_LIMITS) -> BinaryIO:
    """Open a layer blob (gzip, zstd or plain tar) as an uncompressed byte stream."""
    f = open(path, "rb")  # noqa: SIM115 - closed by the returned stream
    try:
        return decompressed(f, close_source=True, limits=limits)
    except BaseException:
        f.close()
        raise

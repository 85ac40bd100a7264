"""Deterministic layer compression that hashes both sides in the same pass.

gzip: raw deflate from the system zlib behind a fixed header (mtime 0, no
file name, OS 255 as Go's compress/gzip writes), byte-identical to
`gzip.GzipFile(filename="", mtime=0)`. Level 6 by default.

zstd: python-zstandard (it bundles its own libzstd, so the version is pinned by
the package) in multi-threaded streaming mode. libzstd guarantees that
multi-threaded streaming output does not depend on the number of workers
(facebook/zstd#2238, #2327), but it differs from single-threaded output, so we
always use at least one worker: the same level gives the same bytes on every
machine, whatever its core count. Frames carry a content checksum, like the
zstd CLI's default.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

import zstandard

from pybuild.digest import Digest
from pybuild.layers.diff import write_diff_from_upper, write_tree
from pybuild.layers.errors import LayerError
from pybuild.layers.hashsink import FileHashWriter, ThreadedHashWriter, plain_file_fd
from pybuild.oci import mediatypes

Compression = Literal["gzip", "zstd", "none"]

GZIP_DEFAULT_LEVEL = 6
ZSTD_DEFAULT_LEVEL = 3
_READ_CHUNK = 1 << 20

MEDIA_TYPES: dict[str, str] = {
    "gzip": mediatypes.OCI_LAYER_GZIP,
    "zstd": mediatypes.OCI_LAYER_ZSTD,
    "none": mediatypes.OCI_LAYER,
}


def zstd_threads() -> int:
    # >= 1 always: multi-threaded output is identical for any worker count.
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True, slots=True)
class LayerResult:
    diff_id: Digest  # sha256 of the uncompressed tar
    size: int  # uncompressed size
    digest: Digest  # sha256 of the blob as written
    compressed_size: int
    media_type: str


class _Gzip:
    def __init__(self, level: int) -> None:
        xfl = b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00"
        self._header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + xfl + b"\xff"
        self._z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
        self._crc = 0
        self._size = 0

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._z.compress(data)
        if self._header:
            out = self._header + out
            self._header = b""
        return out

    def flush(self) -> bytes:
        tail = self._header + self._z.flush()
        return tail + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)


class CompressingWriter:
    """A write-only sink: hashes what it is given, compresses it, writes and hashes the result.

    Uncompressed into a regular file open for reading and writing ("w+b"), the sink writes
    through the descriptor with a FileHashWriter: big file contents are copied in-kernel
    (`copy_fd`, used by LayerWriter) and hashed from the file on a worker thread, and the
    file object's offset is at the end after `finish`.
    """

    def __init__(self, dst: BinaryIO, kind: Compression, *, level: int | None = None) -> None:
        if kind not in MEDIA_TYPES:
            raise LayerError(f"unknown compression {kind!r} (use gzip, zstd or none)")
        self.kind = kind
        self._dst = dst
        self._usha = hashlib.sha256()
        self._usize = 0
        self._closed = False
        self._digest = ""
        # Compressed bytes are hashed and written on a worker thread; a plain
        # tar is its own blob, so it is hashed once and written directly.
        self._out = ThreadedHashWriter(dst) if kind != "none" else None
        self._file: FileHashWriter | None = None
        if kind == "none":
            fd = plain_file_fd(dst)
            if fd is not None:
                dst.flush()
                self._file = FileHashWriter(fd)
        self._c: _Gzip | zstandard.ZstdCompressionObj | None
        if kind == "gzip":
            self._c = _Gzip(GZIP_DEFAULT_LEVEL if level is None else level)
        elif kind == "zstd":
            cctx = zstandard.ZstdCompressor(
                level=ZSTD_DEFAULT_LEVEL if level is None else level,
                threads=zstd_threads(),
                write_checksum=True,
            )
            self._c = cctx.compressobj()
        else:
            self._c = None

    def writable(self) -> bool:
        return True

    @property
    def copy_fd(self) -> Callable[[int, int], int] | None:
        """In-kernel copy of a file into a plain blob file (see LayerWriter)."""
        return self._file.copy_fd if self._file is not None else None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._file is not None:
            return self._file.write(data)
        n = len(data)
        self._usha.update(data)
        self._usize += n
        if self._c is None or self._out is None:
            self._dst.write(data)
        else:
            out = self._c.compress(data)
            if out:
                self._out.put(out)
        return n

    def finish(self) -> tuple[str, int, str, int]:
        """Flush the compressor; (diff_id hex, size, digest hex, compressed size)."""
        if self._file is not None:
            digest, size = self._file.close()
            return digest, size, digest, size
        diff_id = self._usha.hexdigest()
        if self._c is None or self._out is None:
            return diff_id, self._usize, diff_id, self._usize
        if not self._closed:
            self._closed = True
            try:
                tail = self._c.flush()
                if tail:
                    self._out.put(tail)
            finally:
                self._digest = self._out.close()
        return diff_id, self._usize, self._digest, self._out.size

    def abort(self) -> None:
        """Stop the worker thread after a failure; the output is unusable."""
        if self._file is not None:
            self._file.abort()
        if self._out is not None and not self._closed:
            self._closed = True
            self._digest = ""
            try:
                self._out.close()
            except BaseException:
                pass

    def result(self) -> LayerResult:
        diff_id, size, digest, csize = self.finish()
        return LayerResult(
            diff_id=Digest.from_hex(diff_id),
            size=size,
            digest=Digest.from_hex(digest),
            compressed_size=csize,
            media_type=MEDIA_TYPES[self.kind],
        )


def compress_stream(
    src: BinaryIO, dst: BinaryIO, kind: Compression, *, level: int | None = None
) -> tuple[str, int, str, int]:
    """Compress `src` into `dst`; (diff_id hex, size, digest hex, compressed size)."""
    sink = CompressingWriter(dst, kind, level=level)
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    readinto = getattr(src, "readinto", None)
    try:
        while True:
            if readinto is not None:
                n = readinto(buf)
                if not n:
                    break
                sink.write(view[:n])
            else:
                chunk = src.read(_READ_CHUNK)
                if not chunk:
                    break
                sink.write(chunk)
    except BaseException:
        sink.abort()
        raise
    return sink.finish()


def write_diff_compressed(
    upper: str,
    dst_path: str,
    kind: Compression,
    *,
    level: int | None = None,
    mtime: int | None = None,
    lower_dirs: Sequence[str] = (),
) -> LayerResult:
    """Diff an upper dir straight into a compressed blob file, no temporary tar."""
    # "w+b": a plain blob is hashed back from the file (see CompressingWriter).
    with open(dst_path, "w+b") as dst:
        sink = CompressingWriter(dst, kind, level=level)
        try:
            write_diff_from_upper(upper, sink, mtime=mtime, lower_dirs=lower_dirs)  # type: ignore[arg-type]
        except BaseException:
            sink.abort()
            raise
        return sink.result()


def write_tree_compressed(
    root: str,
    dst_path: str,
    kind: Compression,
    *,
    level: int | None = None,
    mtime: int | None = None,
) -> LayerResult:
    """A full layer of a plain directory straight into a compressed blob file."""
    # "w+b": a plain blob is hashed back from the file (see CompressingWriter).
    with open(dst_path, "w+b") as dst:
        sink = CompressingWriter(dst, kind, level=level)
        try:
            write_tree(root, sink, mtime=mtime)  # type: ignore[arg-type]
        except BaseException:
            sink.abort()
            raise
        return sink.result()

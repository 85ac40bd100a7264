"""Deterministic layer compression that hashes both sides in the same pass.

gzip: one gzip member with a fixed header (mtime 0, no file name, OS 255 as Go's
compress/gzip writes), level 6 by default, compressed on up to 8 threads the way pigz
does: the input is cut into fixed 128 KiB blocks, each block is raw deflate from the
system zlib primed with the 32 KiB before it and ended with a sync flush, and the
pieces are concatenated. Any gzip reader sees an ordinary stream; the bytes depend on
the data, the level, the block size and the zlib version, never on the thread count
or on how the input was split into writes. They differ from `gzip.GzipFile`'s (the
flush points), and the ratio is within a fraction of a percent of it.

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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
# Part of the output format: changing it changes every gzip digest (and the memo of
# compressed layers keyed by diff_id). pigz's default: a sync flush costs ~5 bytes and
# primed blocks lose little ratio, and a 1 MiB layer still spreads over 8 threads.
GZIP_BLOCK = 128 << 10
_GZIP_WINDOW = 32 << 10  # deflate's window: the dictionary each block is primed with
_GZIP_INFLIGHT_PER_THREAD = 4  # blocks queued per thread; bounds memory at ~1 MiB/thread

MEDIA_TYPES: dict[str, str] = {
    "gzip": mediatypes.OCI_LAYER_GZIP,
    "zstd": mediatypes.OCI_LAYER_ZSTD,
    "none": mediatypes.OCI_LAYER,
}


def gzip_threads() -> int:
    # Only speed depends on it, never the bytes.
    return max(1, min(os.cpu_count() or 1, 8))


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
    """gzip in fixed-size blocks compressed in parallel (the pigz format).

    Each block is raw deflate at `level`, primed with the previous block's last 32 KiB
    (the whole deflate window, so matches across the cut are still found), and ends
    with a sync flush (byte-aligned, so the pieces concatenate into one deflate stream);
    the last ends the stream. The cuts depend only on the input length, so the output
    is the same however the input is split into writes and whatever the thread count.
    Compressed blocks go to `emit` in order; the CRC-32 is computed on the caller's
    thread, as zlib.crc32 runs at GB/s.
    """

    def __init__(self, level: int, emit: Callable[[bytes], None], threads: int) -> None:
        zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)  # a bad level fails here
        self._level = level
        self._emit = emit
        self._threads = max(1, threads)
        xfl = b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00"
        emit(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + xfl + b"\xff")
        self._crc = 0
        self._size = 0
        self._pending = bytearray()  # the input after the last cut, at most one block
        self._dict = b""  # the tail of the last block cut
        self._pool: ThreadPoolExecutor | None = None  # started by the second block
        self._inflight: deque[Future[bytes]] = deque()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        # A block is cut only once data follows it: the last block must end the stream.
        if self._pending:
            take = min(GZIP_BLOCK - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if not view:
                return
            self._submit(bytes(self._pending))
            self._pending.clear()
        while len(view) > GZIP_BLOCK:
            self._submit(bytes(view[:GZIP_BLOCK]))  # a copy: the caller reuses its buffer
            view = view[GZIP_BLOCK:]
        self._pending += view

    def finish(self) -> None:
        try:
            last = _deflate_block(bytes(self._pending), self._dict, self._level, True)
            while self._inflight:
                self._emit(self._inflight.popleft().result())
            self._emit(last + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self.abort()

    def abort(self) -> None:
        for fut in self._inflight:
            fut.cancel()
        self._inflight.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _submit(self, block: bytes) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="gzip-block")
        self._inflight.append(
            self._pool.submit(_deflate_block, block, self._dict, self._level, False)
        )
        self._dict = block[-_GZIP_WINDOW:]
        # Bounded memory: wait for the oldest block once enough are queued, and hand on
        # whatever has finished in order so the hashing thread keeps busy.
        while self._inflight and (
            len(self._inflight) >= self._threads * _GZIP_INFLIGHT_PER_THREAD
            or self._inflight[0].done()
        ):
            self._emit(self._inflight.popleft().result())


def _deflate_block(block: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    # zlib releases the GIL in compress() and flush(), so blocks run in parallel.
    if zdict:
        z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0, zdict)
    else:
        z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
    return z.compress(block) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


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
        # gzip hands its blocks to the output itself, as they complete.
        self._gz: _Gzip | None = None
        self._c: zstandard.ZstdCompressionObj | None = None
        try:
            if kind == "gzip" and self._out is not None:
                self._gz = _Gzip(
                    GZIP_DEFAULT_LEVEL if level is None else level, self._out.put, gzip_threads()
                )
            elif kind == "zstd":
                cctx = zstandard.ZstdCompressor(
                    level=ZSTD_DEFAULT_LEVEL if level is None else level,
                    threads=zstd_threads(),
                    write_checksum=True,
                )
                self._c = cctx.compressobj()
        except BaseException:
            self.abort()  # a bad level: do not leave the writer thread behind
            raise

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
        if self._gz is not None:
            self._gz.write(data)
        elif self._c is not None and self._out is not None:
            out = self._c.compress(data)
            if out:
                self._out.put(out)
        else:
            self._dst.write(data)
        return n

    def finish(self) -> tuple[str, int, str, int]:
        """Flush the compressor; (diff_id hex, size, digest hex, compressed size)."""
        if self._file is not None:
            digest, size = self._file.close()
            return digest, size, digest, size
        diff_id = self._usha.hexdigest()
        if self._out is None:
            return diff_id, self._usize, diff_id, self._usize
        if not self._closed:
            self._closed = True
            try:
                if self._gz is not None:
                    self._gz.finish()
                elif self._c is not None:
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
        if self._gz is not None:
            self._gz.abort()
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

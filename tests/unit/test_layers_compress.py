"""Compression: determinism, one-pass digests, and detection on the way back."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import random
import shutil
import struct
import subprocess
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from pybuild.digest import Digest
from pybuild.layers import (
    LayerError,
    compress_stream,
    detect_compression,
    open_layer_stream,
    write_diff_compressed,
    write_tree_compressed,
)
from pybuild.layers import compress as compress_mod

DATA = os.urandom(1 << 20) + b"layer text " * 300_000 + bytes(2 << 20)


def _compress(data: bytes, kind: str, **kw: object) -> tuple[bytes, tuple[str, int, str, int]]:
    out = io.BytesIO()
    res = compress_stream(io.BytesIO(data), out, kind, **kw)  # type: ignore[arg-type]
    return out.getvalue(), res


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_digests_describe_both_sides(kind: str) -> None:
    blob, (diff_id, size, digest, csize) = _compress(DATA, kind)
    assert diff_id == hashlib.sha256(DATA).hexdigest() and size == len(DATA)
    assert digest == hashlib.sha256(blob).hexdigest() and csize == len(blob)
    assert detect_compression(blob[:4]) == kind
    if kind == "none":
        assert blob == DATA and digest == diff_id
    else:
        assert len(blob) < len(DATA)


def _gzipfile(data: bytes, level: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=level, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def _gzip_sink(data: bytes, sizes: Sequence[int], threads: int, level: int | None = None) -> bytes:
    """`data` through a CompressingWriter in writes of `sizes` (cycled), on `threads`."""
    out = io.BytesIO()
    old = compress_mod.gzip_threads
    compress_mod.gzip_threads = lambda: threads  # type: ignore[assignment]
    try:
        sink = compress_mod.CompressingWriter(out, "gzip", level=level)
    finally:
        compress_mod.gzip_threads = old  # type: ignore[assignment]
    pos = 0
    for n in itertools.cycle(sizes):
        if pos >= len(data):
            break
        sink.write(memoryview(data)[pos : pos + n])
        pos += n
    diff_id, size, digest, csize = sink.finish()
    blob = out.getvalue()
    assert (diff_id, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (digest, csize) == (hashlib.sha256(blob).hexdigest(), len(blob))
    return blob


def _single_member(blob: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    raw = d.decompress(blob) + d.flush()
    assert d.eof and not d.unused_data  # one member, nothing after it
    return raw


BLOCK = compress_mod.GZIP_BLOCK


def _blocks_reference(data: bytes, level: int = 6) -> bytes:
    """The format, written out plainly: BLOCK-sized raw deflate pieces, each primed with
    the 32 KiB before it, sync-flushed but the last, which finishes the stream."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    starts = range(0, max(len(data), 1), BLOCK)
    body = b""
    for start in starts:
        last = start == starts[-1]
        zdict = data[max(0, start - 32768) : start]
        z = (zlib.compressobj(level, zlib.DEFLATED, -15, 8, 0, zdict) if zdict
             else zlib.compressobj(level, zlib.DEFLATED, -15))
        body += z.compress(data[start : start + BLOCK])
        body += z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
GZIP_INPUTS = {
    "empty": b"",
    "one-byte": b"x",
    "one-block": os.urandom(BLOCK // 2) + b"ab" * (BLOCK // 4),
    "block+1": os.urandom(BLOCK + 1),
    "random": os.urandom(5 << 20),
    "zeros": bytes(5 << 20),
    "mixed": DATA,
}


@pytest.mark.parametrize("name", list(GZIP_INPUTS))
def test_gzip_blocks_are_one_standard_member(name: str) -> None:
    data = GZIP_INPUTS[name]
    blob = _gzip_sink(data, [1 << 20], threads=2)
    assert blob[:4] == b"\x1f\x8b\x08\x00" and blob[4:8] == b"\0\0\0\0"  # no name, mtime 0
    assert blob[9] == 255  # OS "unknown", as Go's compress/gzip writes
    assert _single_member(blob) == data
    assert gzip.decompress(blob) == data
    if shutil.which("gzip"):
        subprocess.run(["gzip", "-t"], input=blob, check=True)
    # A flush point costs a few bytes; otherwise the ratio is that of a single stream.
    single = len(_gzipfile(data, 6))
    assert len(blob) <= single * 1.01 + 32 * (len(data) // BLOCK + 1)


@pytest.mark.parametrize("name", list(GZIP_INPUTS))
def test_gzip_bytes_do_not_depend_on_writes_or_threads(name: str) -> None:
    data = GZIP_INPUTS[name]
    reference = _blocks_reference(data)
    assert _gzip_sink(data, [len(data) or 1], threads=1) == reference
    assert _gzip_sink(data, [1, 7, (1 << 20) + 3], threads=8) == reference
    assert _gzip_sink(data, [(1 << 20) + 3, 1, 7], threads=1) == reference
    assert _gzip_sink(data, [BLOCK], threads=2) == reference
    if len(data) <= 2 * BLOCK:  # byte by byte is slow in Python
        assert _gzip_sink(data, [1], threads=8) == reference
    out = io.BytesIO()
    assert compress_stream(io.BytesIO(data), out, "gzip")[2:] == (
        hashlib.sha256(reference).hexdigest(),
        len(reference),
    )


@pytest.mark.skipif(not zlib.ZLIB_RUNTIME_VERSION.startswith("1.2."),
                    reason="expected bytes are those of zlib 1.2.x deflate")
def test_gzip_format_is_stable() -> None:
    """The compressed digest is part of an image's identity: a change here (block size,
    priming, flushes, header) changes every pushed gzip layer."""
    rnd = random.Random(0)
    data = rnd.randbytes(300_000) + bytes(200_000) + b"pybuild layer " * 40_000
    blob = _gzip_sink(data, [65_537], threads=2)
    assert len(blob) == 301_788
    assert hashlib.sha256(blob).hexdigest() == (
        "c4bb23a4b9450e54391e8167f2611c57abc0c743e54c72d215ffef5ecd0f46e4"
    )


@pytest.mark.parametrize("level", [1, 9])
def test_gzip_levels(level: int) -> None:
    blob = _gzip_sink(DATA, [1 << 20], threads=2, level=level)
    assert blob[8] == (4 if level == 1 else 2)  # XFL: fastest / best
    assert _single_member(blob) == DATA
    assert len(blob) <= len(_gzipfile(DATA, level)) * 1.01 + 32 * (len(DATA) // BLOCK + 1)


def test_gzip_bad_level_fails_up_front() -> None:
    with pytest.raises(ValueError):
        compress_mod.CompressingWriter(io.BytesIO(), "gzip", level=42)
    assert not [t for t in threading.enumerate() if t.name == "layer-hash-writer"]


def test_gzip_failure_stops_the_block_threads() -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.left = 8 << 20

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            if self.left <= 0:
                raise OSError("disk gone")
            n = min(len(b), self.left)
            b[:n] = os.urandom(n)
            self.left -= n
            return n

    with pytest.raises(OSError, match="disk gone"):
        compress_stream(Failing(), io.BytesIO(), "gzip")  # type: ignore[arg-type]
    assert not [t for t in threading.enumerate() if t.name.startswith("gzip-block")]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_zstd_bytes_do_not_depend_on_thread_count(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, _ = _compress(DATA, "zstd")
    monkeypatch.setattr(compress_mod, "zstd_threads", lambda: threads)
    blob, _ = _compress(DATA, "zstd")
    assert blob == reference


def test_zstd_bytes_do_not_depend_on_write_sizes() -> None:
    reference, _ = _compress(DATA, "zstd")
    out = io.BytesIO()
    sink = compress_mod.CompressingWriter(out, "zstd")
    for i in range(0, len(DATA), 4099):
        sink.write(DATA[i : i + 4099])
    sink.finish()
    assert out.getvalue() == reference


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_system_tools_decompress_it(kind: str) -> None:
    tool = {"gzip": "gzip", "zstd": "zstd"}[kind]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    blob, _ = _compress(DATA, kind)
    res = subprocess.run([tool, "-dc"], input=blob, capture_output=True, check=True)
    assert res.stdout == DATA


def test_read_only_sources_work() -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._f = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self._f.read(min(n, 1000))

    out = io.BytesIO()
    res = compress_stream(ReadOnly(DATA), out, "zstd")  # type: ignore[arg-type]
    assert res[0] == hashlib.sha256(DATA).hexdigest()


def test_unknown_kind() -> None:
    with pytest.raises(LayerError):
        compress_stream(io.BytesIO(b""), io.BytesIO(), "lz4")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_write_diff_compressed_and_open_layer_stream(tmp_path: Path, kind: str) -> None:
    up = tmp_path / "up"
    up.mkdir()
    (up / "f").write_bytes(DATA)
    os.mknod(up / "gone", 0o020000, os.makedev(0, 0))
    blob = tmp_path / "blob"
    res = write_diff_compressed(str(up), str(blob), kind, mtime=0)  # type: ignore[arg-type]
    assert isinstance(res.diff_id, Digest) and isinstance(res.digest, Digest)
    raw = blob.read_bytes()
    assert res.digest.hex == hashlib.sha256(raw).hexdigest()
    assert res.compressed_size == len(raw)
    assert res.media_type == compress_mod.MEDIA_TYPES[kind]
    with open_layer_stream(str(blob)) as stream:
        tar = stream.read()
    assert res.diff_id.hex == hashlib.sha256(tar).hexdigest() and res.size == len(tar)
    assert b".wh.gone" in tar
    again = tmp_path / "again"
    assert write_diff_compressed(str(up), str(again), kind, mtime=0) == res  # type: ignore[arg-type]


def test_write_tree_compressed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    res = write_tree_compressed(str(root), str(tmp_path / "blob"), "zstd")
    assert res.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert res.size == 512 * 4  # header, data, two end blocks


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_corrupt_blobs_are_layer_errors(kind: str, tmp_path: Path) -> None:
    blob, _ = _compress(DATA, kind)
    for bad in (blob[: len(blob) // 2], blob[:100] + bytes(200) + blob[300:]):
        path = tmp_path / "bad"
        path.write_bytes(bad)
        with pytest.raises(LayerError), open_layer_stream(str(path)) as s:
            while s.read(1 << 20):
                pass

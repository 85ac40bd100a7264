"""Compression: determinism, one-pass digests, and detection on the way back."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
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


def test_gzip_is_deterministic_and_standard() -> None:
    blob, _ = _compress(DATA, "gzip")
    assert blob == _compress(DATA, "gzip")[0]
    assert blob == _gzipfile(DATA, 6)
    assert blob[3] == 0 and blob[4:8] == b"\0\0\0\0"  # no file name, mtime 0
    assert blob[9] == 255  # OS "unknown", as Go's compress/gzip writes
    assert gzip.decompress(blob) == DATA
    fast, _ = _compress(DATA, "gzip", level=1)
    assert fast == _gzipfile(DATA, 1)


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

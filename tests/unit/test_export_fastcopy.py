"""The export fast paths: compressed blobs written through the descriptor with windowed
writeback (ThreadedHashWriter), store blobs copied into archives in-kernel and verified
by hashing them back from the archive (copy_blob_verified), and the recompressing
reader that drops what it has read. Same bytes as the streamed paths; corruption is
still caught."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, UserError
from pybuild.layers import hashsink, recompress
from pybuild.layers.compress import compress_stream
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.transports.archive import copy_blob_verified

MIB = 1 << 20


def _payload(size: int) -> bytes:
    # Half random, half zeros: compressible, and not all the same.
    out = bytearray()
    while len(out) < size:
        out += os.urandom(64 << 10) + bytes(64 << 10)
    return bytes(out[:size])


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows and the inline limit small enough that tests cross many of them."""
    monkeypatch.setattr(hashsink, "_WINDOW", 256 << 10)
    monkeypatch.setattr(hashsink, "_INLINE_LIMIT", 64 << 10)
    monkeypatch.setattr(hashsink, "_COPY_STEP", 96 << 10)


def _store_blob(store: ContentStore, data: bytes) -> Descriptor:
    digest = store.write(data)
    return Descriptor(media_type=mt.OCI_LAYER, digest=digest, size=len(data))


# -- ThreadedHashWriter into a regular file ------------------------------------------------


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("drop_cache", [False, True])
def test_threaded_writer_to_file_writes_through_the_descriptor(
    tmp_path: Path, drop_cache: bool
) -> None:
    data = _payload(3 * MIB + 12345)
    path = tmp_path / "blob"
    with open(path, "wb") as f:
        f.write(b"head")  # buffered: must land before the chunks
        w = hashsink.ThreadedHashWriter(f, drop_cache=drop_cache)
        assert w._fd is not None
        for i in range(0, len(data), 100_000):
            w.put(data[i:i + 100_000])
        digest = w.close()
        assert f.tell() == 4 + len(data)
        f.write(b"tail")  # after the chunks, through the file object again
    assert path.read_bytes() == b"head" + data + b"tail"
    assert digest == hashlib.sha256(data).hexdigest() and w.size == len(data)


def test_threaded_writer_to_a_stream_is_unchanged() -> None:
    out = io.BytesIO()
    w = hashsink.ThreadedHashWriter(out)  # type: ignore[arg-type]
    assert w._fd is None
    w.put(b"abc")
    w.put(b"def")
    assert w.close() == hashlib.sha256(b"abcdef").hexdigest()
    assert out.getvalue() == b"abcdef"


def test_regular_file_fd(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with open(path, "wb") as f:
        assert hashsink.regular_file_fd(f) == f.fileno()
    with open(path, "rb") as f:
        assert hashsink.regular_file_fd(f) is None  # not writable
    with open(path, "ab") as f:
        assert hashsink.regular_file_fd(f) is None  # appending
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb") as pipe:
            assert hashsink.regular_file_fd(pipe) is None
    finally:
        os.close(r)
    assert hashsink.regular_file_fd(io.BytesIO()) is None


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_into_a_file_matches_a_stream(tmp_path: Path, kind: str) -> None:
    data = _payload(2 * MIB + 999)
    streamed = io.BytesIO()
    expect = compress_stream(io.BytesIO(data), streamed, kind)  # type: ignore[arg-type]
    with open(tmp_path / "c", "wb") as f:
        got = compress_stream(io.BytesIO(data), f, kind)  # type: ignore[arg-type]
    assert got == expect
    assert (tmp_path / "c").read_bytes() == streamed.getvalue()


# -- copy_blob_verified into a file --------------------------------------------------------


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("size", [0, 1000, 3 * MIB + 1])
def test_copy_blob_into_a_file_is_byte_identical(tmp_path: Path, size: int) -> None:
    store = ContentStore(tmp_path / "store")
    data = _payload(size)
    desc = _store_blob(store, data)
    path = tmp_path / "out"
    fd, tmp = tempfile.mkstemp(dir=tmp_path)  # O_RDWR, as the archive writer opens it
    with os.fdopen(fd, "wb") as f:
        f.write(b"x" * 511)  # an unaligned offset, buffered
        copy_blob_verified(store, desc, f)
        assert f.tell() == 511 + size
        f.write(b"end")
    os.replace(tmp, path)
    assert path.read_bytes() == b"x" * 511 + data + b"end"


def _damage(store: ContentStore, desc: Descriptor, data: bytes) -> None:
    path = store.blob_path(desc.digest)
    os.chmod(path, 0o644)
    path.write_bytes(data)


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("damage", ["flip", "short", "long"])
@pytest.mark.parametrize("into", ["file", "stream"])
def test_copy_blob_detects_a_corrupt_store_blob(tmp_path: Path, damage: str, into: str) -> None:
    store = ContentStore(tmp_path / "store")
    data = _payload(MIB + 3)
    desc = _store_blob(store, data)
    bad = {
        "flip": data[:5000] + bytes([data[5000] ^ 1]) + data[5001:],
        "short": data[:-1],
        "long": data + b"!",
    }[damage]
    _damage(store, desc, bad)
    match = "digest mismatch" if damage == "flip" else "size mismatch"
    if into == "file":
        fd, _ = tempfile.mkstemp(dir=tmp_path)
        with os.fdopen(fd, "wb") as f, pytest.raises(IntegrityError, match=match):
            copy_blob_verified(store, desc, f)
    else:
        with pytest.raises(IntegrityError, match=match):
            copy_blob_verified(store, desc, io.BytesIO())


# -- recompression --------------------------------------------------------------------------


@pytest.mark.usefixtures("small_windows")
def test_recompress_reads_through_the_dropping_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recompress, "_DROP_STEP", 128 << 10)
    store = ContentStore(tmp_path / "store")
    data = _payload(2 * MIB + 17)
    layer = _store_blob(store, data)
    out = recompress.compress_layer(store, layer, "zstd")
    streamed = io.BytesIO()
    _, _, digest_hex, size = compress_stream(io.BytesIO(data), streamed, "zstd")  # type: ignore[arg-type]
    assert out.digest == Digest.from_hex(digest_hex) and out.size == size
    assert store.read(out.digest) == streamed.getvalue()
    assert not store.temp_files()


def test_recompress_detects_a_corrupt_layer(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = _payload(MIB)
    layer = _store_blob(store, data)
    _damage(store, layer, data[:-1] + b"?")
    with pytest.raises(UserError, match="corrupt"):
        recompress.compress_layer(store, layer, "gzip")
    assert not store.temp_files()

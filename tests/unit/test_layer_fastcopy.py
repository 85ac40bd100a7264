"""Plain layer blobs written through FileHashWriter (in-kernel copies, hashing from the
file on a worker thread, windowed writeback) are byte-identical to the streamed tar."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pybuild.layers import (
    CompressingWriter,
    LayerError,
    hashsink,
    write_diff_compressed,
    write_diff_from_upper,
    write_tree,
    write_tree_compressed,
)
from pybuild.layers.tarwriter import LayerWriter

MIB = 1 << 20


def _make_upper(root: Path, *, big_mib: int) -> None:
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small").write_bytes(b"s" * 100)
    for size in (64 << 10, (64 << 10) + 1, 3 * MIB + 7):  # around the small-file limit
        (root / f"f{size}").write_bytes(os.urandom(size))
    big = root / "dir" / "big"
    big.parent.mkdir()
    big.write_bytes(os.urandom(big_mib * MIB) + b"tail")  # not block aligned
    os.link(big, root / "dir" / "big-link")
    os.link(root / "f65537", root / "hard")
    with open(root / "sparse", "wb") as f:  # holes read back as zeros
        f.truncate(9 * MIB)
        f.seek(5 * MIB + 3)
        f.write(b"island")
    (root / "zeros").write_bytes(bytes(6 * MIB))
    os.symlink("dir/big", root / "link")
    opq = root / "opq"
    opq.mkdir()
    os.setxattr(opq, "user.overlay.opaque", b"y")
    (opq / "x").write_bytes(b"x")
    (root / ".wh.gone").write_bytes(b"")  # fuse-overlayfs' whiteout file
    os.setxattr(root / "small", "user.note", b"kept")
    if os.geteuid() == 0:
        os.mknod(root / "deleted", stat.S_IFCHR, os.makedev(0, 0))  # kernel whiteout


def _streamed(upper: Path) -> bytes:
    """The tar as LayerWriter streams it to a plain stream (read into Python)."""
    buf = io.BytesIO()
    write_diff_from_upper(str(upper), buf)
    return buf.getvalue()


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Tiny inline limit, copy steps and windows, so that a few MiB go through every path;
    records the ranges dropped from the page cache."""
    monkeypatch.setattr(hashsink, "_INLINE_LIMIT", 256 << 10)
    monkeypatch.setattr(hashsink, "_COPY_STEP", 96 << 10)
    monkeypatch.setattr(hashsink, "_WINDOW", 512 << 10)
    dropped: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            dropped.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    yield dropped


@pytest.mark.parametrize("big_mib", [1, 20])
def test_plain_blob_matches_streamed_tar(tmp_path: Path, big_mib: int) -> None:
    upper = tmp_path / "upper"
    _make_upper(upper, big_mib=big_mib)
    expected = _streamed(upper)
    out = tmp_path / "layer.tar"
    res = write_diff_compressed(str(upper), str(out), "none")
    data = out.read_bytes()
    assert data == expected
    hexdigest = hashlib.sha256(data).hexdigest()
    assert res.diff_id.hex == res.digest.hex == hexdigest
    assert res.size == res.compressed_size == len(data)


def test_every_path_with_small_windows(
    tmp_path: Path, small_windows: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    upper = tmp_path / "upper"
    _make_upper(upper, big_mib=4)
    expected = _streamed(upper)
    copied: list[int] = []
    real = os.copy_file_range

    def spy(src: int, dst: int, count: int, *offsets: int) -> int:
        n = real(src, dst, count, *offsets)
        copied.append(n)
        return n

    monkeypatch.setattr(os, "copy_file_range", spy)
    out = tmp_path / "layer.tar"
    res = write_diff_compressed(str(upper), str(out), "none")
    assert out.read_bytes() == expected
    assert res.digest.hex == hashlib.sha256(expected).hexdigest()
    assert sum(copied) > 4 * MIB, "big files were not copied in-kernel"
    assert small_windows, "no window was written back and dropped"
    # Windows are dropped in order, without gaps, and never past the end.
    pos = 0
    for offset, length in small_windows:
        assert offset == pos and length > 0
        pos += length
    assert pos <= len(expected)


def test_full_tree_matches_streamed_tar(tmp_path: Path, small_windows: object) -> None:
    root = tmp_path / "root"
    _make_upper(root, big_mib=2)
    buf = io.BytesIO()
    write_tree(str(root), buf, mtime=1000)
    out = tmp_path / "tree.tar"
    res = write_tree_compressed(str(root), str(out), "none", mtime=1000)
    assert out.read_bytes() == buf.getvalue()
    assert res.digest.hex == hashlib.sha256(buf.getvalue()).hexdigest()


def test_without_kernel_copy_or_writeback(
    tmp_path: Path, small_windows: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    upper = tmp_path / "upper"
    _make_upper(upper, big_mib=2)
    expected = _streamed(upper)

    def refuse(*args: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(hashsink, "_sync_file_range", None)
    out = tmp_path / "layer.tar"
    res = write_diff_compressed(str(upper), str(out), "none")
    assert out.read_bytes() == expected
    assert res.digest.hex == hashlib.sha256(expected).hexdigest()


def test_compressed_kinds_hold_the_same_tar(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _make_upper(upper, big_mib=1)
    expected = _streamed(upper)
    gz = write_diff_compressed(str(upper), str(tmp_path / "l.gz"), "gzip")
    assert gzip.decompress((tmp_path / "l.gz").read_bytes()) == expected
    assert gz.diff_id.hex == hashlib.sha256(expected).hexdigest()
    zs = write_diff_compressed(str(upper), str(tmp_path / "l.zst"), "zstd")
    assert zs.diff_id == gz.diff_id


def test_write_only_file_falls_back_to_streaming(tmp_path: Path) -> None:
    payload = os.urandom(3 * MIB)
    with open(tmp_path / "out", "wb") as f:
        sink = CompressingWriter(f, "none")
        assert sink.copy_fd is None
        sink.write(payload)
        diff_id, size, digest, _ = sink.finish()
    assert diff_id == digest == hashlib.sha256(payload).hexdigest() and size == len(payload)


def test_hash_starts_at_the_file_offset(tmp_path: Path, small_windows: object) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * MIB + 5))
    with open(tmp_path / "out", "w+b") as f:
        f.write(b"not part of the blob")
        f.flush()
        w = hashsink.FileHashWriter(f.fileno())
        w.write(b"head")
        fd = os.open(src, os.O_RDONLY)
        try:
            assert w.copy_fd(fd, 3 * MIB + 5) == 3 * MIB + 5
            assert w.copy_fd(fd, 1) == 1  # offset 0 again
        finally:
            os.close(fd)
        w.write(b"end")
        digest, size = w.close()
        assert f.tell() == 20 + size
    body = b"head" + src.read_bytes() + src.read_bytes()[:1] + b"end"
    assert (tmp_path / "out").read_bytes() == b"not part of the blob" + body
    assert digest == hashlib.sha256(body).hexdigest() and size == len(body)


def test_shrunken_file_is_an_error_and_stops_the_hasher(
    tmp_path: Path, small_windows: object
) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(2 * MIB))
    real = os.lstat(src)
    claims = SimpleNamespace(
        st_mode=real.st_mode, st_uid=0, st_gid=0, st_size=3 * MIB, st_nlink=1, st_ino=1,
        st_dev=1, st_rdev=0, st_mtime_ns=0)
    before = threading.active_count()
    with open(tmp_path / "out", "w+b") as f:
        sink = CompressingWriter(f, "none")
        writer = LayerWriter(sink)  # type: ignore[arg-type]
        with pytest.raises(LayerError, match="shrank"):
            writer.add_path("f", str(src), claims, xattrs={})  # type: ignore[arg-type]
        sink.abort()
    assert threading.active_count() == before


def test_many_small_writes_past_the_windows(tmp_path: Path, small_windows: object) -> None:
    # Writes smaller than the hasher's wake-up step: the writeback wait must wake it.
    chunks = [os.urandom(100_000) for _ in range(60)]
    result: list[tuple[str, int]] = []

    def run() -> None:
        with open(tmp_path / "out", "w+b") as f:
            w = hashsink.FileHashWriter(f.fileno())
            for c in chunks:
                w.write(c)
            result.append(w.close())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "the writer waits for a hasher that was never woken"
    [(digest, size)] = result
    body = b"".join(chunks)
    assert digest == hashlib.sha256(body).hexdigest() and size == len(body)
    assert (tmp_path / "out").read_bytes() == body

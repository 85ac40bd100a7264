"""`rewrite-timestamp`'s tar rewrite: every time later than the epoch is clamped, nothing
else changes, and the archive is read as strictly as pybuild reads layers."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from pybuild.layers import tarformat as tf
from pybuild.layers.errors import LayerError
from pybuild.layers.retime import clamp_timestamps
from pybuild.layers.tarreader import TarReader

EPOCH = 1_000_000


def _tar(fmt: int, entries: list[tuple[str, int, bytes, dict[str, str]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, mtime, data, pax in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.pax_headers = len(data), mtime, pax
            info.uid, info.gid, info.uname, info.gname = 1000, 1000, "me", "us"
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "a", EPOCH + 5
        tar.addfile(link)
    return buf.getvalue()


def _rewrite(data: bytes, epoch: int = EPOCH) -> tuple[bytes, bool]:
    out = io.BytesIO()
    done = clamp_timestamps(io.BytesIO(data), out, epoch)
    assert done.source_diff_id == hashlib.sha256(data).hexdigest()
    assert done.diff_id == hashlib.sha256(out.getvalue()).hexdigest()
    assert done.size == len(out.getvalue())
    return out.getvalue(), done.changed


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_later_times_are_clamped_and_nothing_else_changes(fmt: int) -> None:
    entries = [("old", EPOCH - 10, b"kept", {}), ("new", EPOCH + 10, b"clamped", {}),
               ("dir/" + "long-name-" * 12, EPOCH + 99, b"x" * 700, {})]
    if fmt == tarfile.USTAR_FORMAT:
        entries[2] = ("dir/" + "n" * 90, EPOCH + 99, b"x" * 700, {})
    source = _tar(fmt, entries)
    out, changed = _rewrite(source)
    assert changed
    with tarfile.open(fileobj=io.BytesIO(source)) as a, tarfile.open(fileobj=io.BytesIO(out)) as b:
        before, after = a.getmembers(), b.getmembers()
        assert [m.name for m in before] == [m.name for m in after]
        for x, y in zip(before, after, strict=True):
            assert y.mtime == min(x.mtime, EPOCH)
            assert (y.mode, y.uid, y.gid, y.uname, y.gname, y.size, y.linkname, y.type) == (
                x.mode, x.uid, x.gid, x.uname, x.gname, x.size, x.linkname, x.type)
            if x.isreg():
                assert a.extractfile(x).read() == b.extractfile(y).read()  # type: ignore[union-attr]
    assert len(out) == len(source)  # same blocks: only time fields and checksums differ
    # pybuild's own reader takes it, and a second pass finds nothing to do
    assert [e.mtime for e in TarReader(io.BytesIO(out))] == [
        min(m, EPOCH) for m in (EPOCH - 10, EPOCH + 10, EPOCH + 99, EPOCH + 5)]
    again, changed = _rewrite(out)
    assert again == out and not changed


def test_pax_time_records_are_clamped_and_resized() -> None:
    source = _tar(tarfile.PAX_FORMAT, [
        ("f", EPOCH + 1, b"data", {"mtime": f"{EPOCH + 1}.123456789", "atime": f"{EPOCH + 2}.5",
                                     "ctime": f"{EPOCH - 3}.25", "SCHILY.xattr.user.k": "v"})])
    out, changed = _rewrite(source)
    assert changed
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        f = tar.getmember("f")
        assert f.pax_headers["mtime"] == str(EPOCH) and f.pax_headers["atime"] == str(EPOCH)
        assert f.pax_headers["ctime"] == f"{EPOCH - 3}.25"  # earlier: left as it was
        assert f.pax_headers["SCHILY.xattr.user.k"] == "v"
        assert tar.extractfile(f).read() == b"data"  # type: ignore[union-attr]


def test_an_archive_with_nothing_later_is_copied_byte_for_byte() -> None:
    source = _tar(tarfile.PAX_FORMAT, [("a", 5, b"a", {"mtime": "5.5"}), ("b", EPOCH, b"", {})])
    with tarfile.open(fileobj=io.BytesIO(source), mode="r") as tar:
        assert tar.getmember("link").mtime == EPOCH + 5
    # an epoch past every time: nothing to do, the same bytes (trailing padding included)
    out, changed = _rewrite(source + bytes(tf.BLOCK * 3), epoch=EPOCH + 100)
    assert not changed and out == source + bytes(tf.BLOCK * 3)


def test_gnu_header_access_and_change_times() -> None:
    source = bytearray(_tar(tarfile.GNU_FORMAT, [("g", 1, b"g", {})]))
    assert bytes(source[257:265]) == tf.GNU_MAGIC
    source[345:357] = b"%011o\0" % (EPOCH + 7)  # atime
    source[357:369] = b"%011o\0" % (EPOCH - 7)  # ctime
    source[148:156] = b"        "
    source[148:156] = b"%06o\0 " % sum(source[:512])
    out, changed = _rewrite(bytes(source))
    assert changed
    assert tf.parse_number(out[345:357]) == EPOCH and tf.parse_number(out[357:369]) == EPOCH - 7
    assert tf.checksum_ok(out[:512], tf.parse_number(out[148:156]))


@pytest.mark.parametrize(("damage", "message"), [
    ("checksum", "bad checksum"),
    ("truncated", "truncated"),
    ("sparse", "sparse"),
    ("after-end", "after an end-of-archive block"),
])
def test_damaged_archives_are_refused(damage: str, message: str) -> None:
    source = bytearray(_tar(tarfile.PAX_FORMAT, [("f", EPOCH + 1, b"x" * 1000, {})]))
    match damage:
        case "checksum":
            source[0] ^= 1
        case "truncated":
            del source[1200:]
        case "sparse":
            source[156:157] = tf.GNU_SPARSE
            source[148:156] = b"        "
            source[148:156] = b"%06o\0 " % sum(source[:512])
        case "after-end":
            source = bytearray(bytes(tf.BLOCK)) + source
    with pytest.raises(LayerError, match=message):
        clamp_timestamps(io.BytesIO(bytes(source)), io.BytesIO(), EPOCH)

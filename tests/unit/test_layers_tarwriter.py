"""LayerWriter: byte format, determinism, and agreement with independent readers."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.layers import LayerWriter, write_tree
from pybuild.layers import tarformat as tf
from pybuild.layers.xattrs import normalise_capability

MTIME = 1_700_000_000

# chown to other ids, mknod of devices and trusted.* xattrs need root.
NEEDS_ROOT = pytest.mark.requires("root")


def _blocks(data: bytes) -> list[bytes]:
    return [data[i : i + 512] for i in range(0, len(data), 512)]


def _tar_bytes(build) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    w = LayerWriter(buf)
    build(w)
    w.close()
    return buf.getvalue()


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getmembers()


def _make_tree(root: Path, *, reverse: bool = False) -> None:
    """The same tree, its entries created in one order or the reverse."""
    root.mkdir()
    (root / "d" / "sub").mkdir(parents=True)
    files = [
        ("d/sub/b.txt", b"b" * 70000),
        ("a.txt", b"a"),
        ("d/z", b""),
    ]
    for name, content in files[::-1] if reverse else files:
        (root / name).write_bytes(content)
    steps = [
        lambda: os.symlink("a.txt", root / "sym"),
        lambda: os.link(root / "a.txt", root / "d" / "hard"),
        lambda: os.setxattr(root / "a.txt", "user.b", b"2"),
        lambda: os.setxattr(root / "a.txt", "user.a", b"1"),
    ]
    for step in steps[::-1] if reverse else steps:
        step()
    for p in [*root.rglob("*"), root]:
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)


def test_same_tree_built_in_any_order_gives_identical_bytes(tmp_path: Path) -> None:
    _make_tree(tmp_path / "one")
    _make_tree(tmp_path / "two", reverse=True)
    outs = []
    for name in ("one", "two", "one"):
        buf = io.BytesIO()
        write_tree(str(tmp_path / name), buf)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1] == outs[2]
    names = [m.name for m in _members(outs[0])]
    assert names == ["a.txt", "d", "d/hard", "d/sub", "d/sub/b.txt", "d/z", "sym"]


def test_mtime_clamp_makes_fresh_trees_identical(tmp_path: Path) -> None:
    _make_tree(tmp_path / "one")
    _make_tree(tmp_path / "two", reverse=True)
    os.utime(tmp_path / "two" / "a.txt", (MTIME + 500, MTIME + 500))
    os.utime(tmp_path / "one" / "a.txt", (MTIME + 900, MTIME + 900))
    outs = []
    for name in ("one", "two"):
        buf = io.BytesIO()
        write_tree(str(tmp_path / name), buf, mtime=MTIME + 10)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    times = {m.name: m.mtime for m in _members(outs[0])}
    assert times["a.txt"] == MTIME + 10  # clamped down
    assert times["d/z"] == MTIME  # older than the epoch: kept


def test_header_fields_are_plain_ustar() -> None:
    data = _tar_bytes(lambda w: w.add_bytes("etc/hosts", b"x", mode=0o640, uid=7, gid=8, mtime=9))
    header = data[:512]
    assert header[:9] == b"etc/hosts"
    assert header[100:108] == b"0000640\0"
    assert header[108:116] == b"0000007\0"
    assert header[116:124] == b"0000010\0"
    assert header[124:136] == b"00000000001\0"
    assert header[136:148] == b"00000000011\0"
    assert header[156:157] == b"0"
    assert header[257:265] == b"ustar\x0000"
    assert header[265:329] == bytes(64)  # empty uname/gname
    assert header[329:345] == b"0000000\x000000000\0"
    assert tf.checksum_ok(header, int(header[148:154], 8))
    assert header[154:156] == b"\0 "
    assert len(data) == 512 + 512 + 1024  # header, data block, end of archive
    assert data[-1024:] == bytes(1024)


def test_pax_only_when_needed_and_sorted() -> None:
    long_name = "d/" + "n" * 300
    data = _tar_bytes(
        lambda w: [
            w.add_bytes("plain", b""),
            w.add_bytes("ünïcode", b""),
            w.add_bytes(long_name, b""),
            w.add_dir("x" * 90 + "/" + "y" * 90),  # fits ustar prefix/name: no PAX
            w.add_bytes("big-uid", b"", uid=3_000_000, gid=5),
            w.add_symlink("ln", "t" * 150),
            w.add_path("xa", __file__, xattrs={"user.z": b"1", "user.a": b"\xff\x00"}),
        ]
    )
    members = _members(data)
    by_name = {m.name: m for m in members}
    assert by_name["plain"].pax_headers == {}
    assert by_name["ünïcode"].pax_headers == {"path": "ünïcode"}
    assert by_name[long_name].pax_headers == {"path": long_name}
    assert by_name["x" * 90 + "/" + "y" * 90].pax_headers == {}
    assert by_name["big-uid"].uid == 3_000_000
    assert by_name["big-uid"].pax_headers == {"uid": "3000000"}
    assert by_name["ln"].linkname == "t" * 150
    raw = data
    start = raw.index(b"SCHILY.xattr.user.a")
    assert raw.index(b"SCHILY.xattr.user.z") > start  # records sorted by key
    assert "mtime" not in str(by_name["xa"].pax_headers)  # no atime/ctime/mtime records
    xa = by_name["xa"].pax_headers
    assert xa["SCHILY.xattr.user.a"].encode("utf-8", "surrogateescape") == b"\xff\x00"
    types = [b[156:157] for b in _blocks(data) if b[257:263] == b"ustar\0"]
    assert types.count(tf.PAX) == 5


def test_directories_end_with_slash_and_markers() -> None:
    data = _tar_bytes(
        lambda w: [
            w.add_dir("etc"),
            w.add_opaque("etc"),
            w.add_whiteout("etc/passwd"),
            w.add_whiteout("top"),
            w.add_opaque(""),
        ]
    )
    names = [b[:100].rstrip(b"\0") for b in _blocks(data)[:5]]
    assert names == [b"etc/", b"etc/.wh..wh..opq", b"etc/.wh.passwd", b".wh.top", b".wh..wh..opq"]
    for m in _members(data)[1:]:
        assert m.isreg() and m.size == 0 and m.mode == 0 and m.uid == 0 and m.mtime == 0


def test_hardlinks_point_at_first_arcname(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    os.link(tmp_path / "f", tmp_path / "g")
    os.link(tmp_path / "f", tmp_path / "h")
    data = _tar_bytes(
        lambda w: [
            w.add_path("x/g", str(tmp_path / "g")),
            w.add_path("x/f", str(tmp_path / "f")),
            w.add_path("x/h", str(tmp_path / "h")),
        ]
    )
    m = _members(data)
    assert [(i.name, i.type, i.linkname, i.size) for i in m] == [
        ("x/g", tarfile.REGTYPE, "", 4),
        ("x/f", tarfile.LNKTYPE, "x/g", 0),
        ("x/h", tarfile.LNKTYPE, "x/g", 0),
    ]


def test_sockets_are_skipped(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        buf = io.BytesIO()
        w = LayerWriter(buf)
        assert w.add_path("s", str(path)) is False
        w.close()
    assert buf.getvalue() == bytes(1024)


def test_big_file_is_streamed_with_exact_size(tmp_path: Path) -> None:
    big = tmp_path / "big"
    payload = os.urandom(1 << 16) * 40 + b"tail"  # > 2 MiB, not block aligned
    big.write_bytes(payload)
    data = _tar_bytes(lambda w: w.add_path("big", str(big)))
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        f = t.extractfile("big")
        assert f is not None and f.read() == payload
    assert len(data) % 512 == 0


def test_capability_v3_is_written_as_v2() -> None:
    v2 = bytes.fromhex("01000002") + bytes.fromhex("00200000" + "00000000" * 3)
    v3 = bytes.fromhex("01000003") + v2[4:] + bytes.fromhex("e9030000")
    assert normalise_capability(v3) == v2
    assert normalise_capability(v2) == v2


@NEEDS_ROOT
def test_security_capability_recorded(tmp_path: Path) -> None:
    f = tmp_path / "ping"
    f.write_bytes(b"\x7fELF")
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(f)], check=True)
    else:
        os.setxattr(f, "security.capability", bytes.fromhex("0100000200200000" + "00" * 12))
    expected = os.getxattr(f, "security.capability")
    buf = io.BytesIO()
    write_tree(str(tmp_path), buf)
    (m,) = _members(buf.getvalue())
    value = m.pax_headers["SCHILY.xattr.security.capability"]
    assert value.encode("utf-8", "surrogateescape") == expected


@NEEDS_ROOT
@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
def test_gnu_tar_lists_and_extracts_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "dir").mkdir(mode=0o750)
    (src / "dir" / "f").write_bytes(b"hello")
    os.chown(src / "dir" / "f", 1000, 1000)
    os.chmod(src / "dir" / "f", 0o4755)  # after chown, which clears setuid
    os.symlink("dir/f", src / "l")
    os.link(src / "dir" / "f", src / "hl")
    os.mkfifo(src / "p")
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.chmod(src / "null", 0o666)
    deep = src / ("a" * 120) / ("b" * 120)
    deep.mkdir(parents=True)
    (deep / ("c" * 200)).write_bytes(b"deep")
    (src / "ünï").write_bytes(b"u")
    os.setxattr(src / "ünï", "user.foo", b"bar")
    out = tmp_path / "layer.tar"
    with open(out, "wb") as f:
        write_tree(str(src), f)
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", str(out)], capture_output=True, text=True, check=True
    )
    assert listing.stderr == ""
    lines = listing.stdout.splitlines()
    assert len(lines) == 10
    text = listing.stdout
    assert "-rwsr-xr-x 1000/1000" in text
    assert "hl link to dir/f" in text
    assert "l -> dir/f" in text
    assert "crw-rw-rw- 0/0" in text and "1,3" in text
    assert "c" * 200 in text and "ünï" in text
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(out), "-C", str(dest)],
        check=True,
    )
    assert (dest / "dir" / "f").read_bytes() == b"hello"
    assert os.stat(dest / "dir" / "f").st_mode & 0o7777 == 0o4755
    assert os.stat(dest / "dir" / "f").st_uid == 1000
    assert os.stat(dest / "hl").st_ino == os.stat(dest / "dir" / "f").st_ino
    assert os.readlink(dest / "l") == "dir/f"
    assert (dest / ("a" * 120) / ("b" * 120) / ("c" * 200)).read_bytes() == b"deep"
    assert os.getxattr(dest / "ünï", "user.foo") == b"bar"
    assert os.stat(dest / "dir").st_mode & 0o777 == 0o750


def test_out_of_range_numbers_go_to_pax() -> None:
    data = _tar_bytes(lambda w: w.add_bytes("old", b"", mtime=-5))
    (m,) = _members(data)
    assert m.mtime == -5 and m.pax_headers == {"mtime": "-5"}
    buf = io.BytesIO()
    w = LayerWriter(buf)
    w._header(b"huge", tf.REG, 0o644, 0, 0, 1 << 33, 0)  # the 8 GiB ustar limit
    header = buf.getvalue() if buf.getvalue() else bytes(w._pending)
    assert b"19 size=8589934592\n" in header
    assert header[512 + 512 + 124 : 512 + 512 + 136] == b"00000000000\0"


def test_pax_record_lengths_at_digit_boundaries() -> None:
    for n in [*range(80, 110), *range(985, 1010), *range(9980, 10010)]:
        record = tf.pax_record(b"k", b"v" * n)
        length = record.partition(b" ")[0]
        assert int(length) == len(record), n
        assert tf.parse_pax(record) == {b"k": b"v" * n}

"""ADD's archive detection and safe extraction (builder/executor/fileops.py)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from pybuild.builder.executor.fileops import is_archive, untar
from pybuild.errors import UserError

UID, GID = os.getuid(), os.getgid()


def _tar(members: list[tuple[str, bytes | None, dict[str, object]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, over in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime, info.mode = UID, GID, 1_234_567_890, 0o644
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size = len(data)
            for k, v in over.items():
                setattr(info, k, v)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


ONE = _tar([("a.txt", b"A", {})])


@pytest.mark.parametrize(("data", "want"), [
    (ONE, True),
    (gzip.compress(ONE, mtime=0), True),
    (bz2.compress(ONE), True),
    (lzma.compress(ONE), True),
    (zstandard.ZstdCompressor().compress(ONE), True),
    (b"\0" * 1024, False),  # an empty archive is not one (Go's tar.Next returns EOF)
    (b"hello world\n" * 100, False),
    (gzip.compress(b"hello world\n" * 100, mtime=0), False),
    (b"BZh9 not really bzip2", False),
    (b"", False),
])
def test_is_archive_by_content(tmp_path: Path, data: bytes, want: bool) -> None:
    f = tmp_path / "any.name"
    f.write_bytes(data)
    assert is_archive(str(f)) is want


def _extract(tmp_path: Path, data: bytes, owner: tuple[int, int] | None = None) -> Path:
    arch = tmp_path / "a.tar"
    arch.write_bytes(data)
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    untar(str(arch), str(dest), owner)
    return dest


def test_untar_metadata_links_and_whiteout_names(tmp_path: Path) -> None:
    dest = _extract(tmp_path, _tar([
        ("d/", None, {"mode": 0o750}),
        ("d/f", b"F", {"mode": 0o600}),
        ("d/l", b"", {"type": tarfile.SYMTYPE, "linkname": "f"}),
        ("d/h", b"", {"type": tarfile.LNKTYPE, "linkname": "d/f"}),
        ("implied/x/y", b"Y", {}),
        (".wh.d", b"", {}),
        ("d/.wh..wh..opq", b"", {}),
    ]))
    assert (dest / "d/f").read_text() == "F"
    assert (dest / "d/f").stat().st_mode & 0o7777 == 0o600
    assert (dest / "d").stat().st_mode & 0o7777 == 0o750
    assert (dest / "d").stat().st_mtime == 1_234_567_890
    assert (dest / "d/f").stat().st_mtime == 1_234_567_890
    assert os.readlink(dest / "d/l") == "f"
    assert (dest / "d/h").stat().st_ino == (dest / "d/f").stat().st_ino
    assert (dest / "implied/x").stat().st_mode & 0o7777 == 0o755
    # whiteout names are plain files in a user's archive
    assert (dest / ".wh.d").is_file() and (dest / "d/.wh..wh..opq").is_file()


def test_untar_overwrites_and_merges(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d/old").write_text("old")
    (dest / "f").mkdir()
    _extract(tmp_path, _tar([("d/new", b"N", {}), ("f", b"file now", {})]))
    assert sorted(os.listdir(dest / "d")) == ["new", "old"]
    assert (dest / "f").read_text() == "file now"


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/../evil"])
def test_untar_refuses_breakout(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="escapes the destination"):
        _extract(tmp_path, _tar([(name, b"e", {})]))
    assert not (tmp_path / "evil").exists()


def test_untar_symlinks_stay_inside(tmp_path: Path) -> None:
    """A symlink in the archive pointing outside is resolved as if dest were `/`
    (chrootarchive): entries below it land inside dest."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = _extract(tmp_path, _tar([
        ("up", b"", {"type": tarfile.SYMTYPE, "linkname": "../../outside"}),
        ("abs", b"", {"type": tarfile.SYMTYPE, "linkname": str(outside)}),
        ("up/x", b"1", {}),
        ("abs/y", b"2", {}),
    ]))
    assert os.listdir(outside) == []
    assert (dest / "outside/x").read_text() == "1"  # ../../outside from / is /outside
    assert (dest / str(outside).lstrip("/") / "y").read_text() == "2"


def test_untar_hardlink_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    with pytest.raises(UserError, match="escapes the destination"):
        _extract(tmp_path, _tar([("h", b"", {"type": tarfile.LNKTYPE,
                                             "linkname": "../secret"})]))
    with pytest.raises(UserError, match="invalid hard link"):
        _extract(tmp_path, _tar([("h", b"", {"type": tarfile.LNKTYPE,
                                             "linkname": "nothing-here"})]))


def test_untar_corrupt(tmp_path: Path) -> None:
    data = bytearray(_tar([("a", b"x" * 2000, {})]))
    with pytest.raises(UserError, match="cannot extract"):
        _extract(tmp_path, bytes(data[:1500]))


def test_untar_chown_override(tmp_path: Path) -> None:
    dest = _extract(tmp_path, _tar([("o/x", b"x", {})]), owner=(UID, GID))
    assert ((dest / "o/x").stat().st_uid, (dest / "o").stat().st_uid) == (UID, UID)


# --- hostile archives: every operation stays inside dest (the F1 class) -----------------


def test_untar_symlinked_parent_does_not_redirect_deferred_metadata(tmp_path: Path) -> None:
    """`d/` (0777, mtime 0), `d/sub/`, then `d` -> a host directory: the deferred mode and
    mtime of `d` and `d/sub` must not land on the host directory (it would with a path
    resolved by the kernel at the end)."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    victim.chmod(0o700)
    (victim / "sub").chmod(0o700)
    before = [(p.stat().st_mode, p.stat().st_mtime_ns) for p in (victim, victim / "sub")]
    dest = _extract(tmp_path, _tar([
        ("d/", None, {"mode": 0o777, "mtime": 0}),
        ("d/sub/", None, {"mode": 0o777, "mtime": 0}),
        ("d", b"", {"type": tarfile.SYMTYPE, "linkname": str(victim)}),
        ("d/sub/after", b"x", {}),
    ]))
    assert [(p.stat().st_mode, p.stat().st_mtime_ns) for p in (victim, victim / "sub")] \
        == before
    assert os.listdir(victim / "sub") == []
    assert os.readlink(dest / "d") == str(victim)
    # the entry below the symlink resolved inside dest, as if dest were /
    assert (dest / str(victim).lstrip("/") / "sub/after").read_bytes() == b"x"


def test_untar_file_over_symlinked_parent_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = _extract(tmp_path, _tar([
        ("etc", b"", {"type": tarfile.SYMTYPE, "linkname": str(outside)}),
        ("etc/passwd", b"owned", {"mode": 0o4755}),
        ("rel", b"", {"type": tarfile.SYMTYPE, "linkname": "../../../../" + str(outside)}),
        ("rel/f", b"r", {}),
    ]))
    assert os.listdir(outside) == []
    inside = dest / str(outside).lstrip("/")
    assert (inside / "passwd").read_bytes() == b"owned"
    assert (inside / "f").read_bytes() == b"r"


@pytest.mark.parametrize(("name", "lands"), [
    ("/abs/file", "abs/file"),
    ("a/../b", "b"),
    ("./c/./d", "c/d"),
    ("//twice//slashed", "twice/slashed"),
])
def test_untar_names_are_cleaned_inside(tmp_path: Path, name: str, lands: str) -> None:
    dest = _extract(tmp_path, _tar([(name, b"n", {})]))
    assert (dest / lands).read_bytes() == b"n"


@pytest.mark.parametrize("link", ["../secret", "/../secret", "a/../../secret"])
def test_untar_hard_links_cannot_climb_out(tmp_path: Path, link: str) -> None:
    (tmp_path / "secret").write_text("s")
    with pytest.raises(UserError, match="escapes the destination"):
        _extract(tmp_path, _tar([("h", b"", {"type": tarfile.LNKTYPE, "linkname": link})]))


def test_untar_hard_link_through_symlink_resolves_inside(tmp_path: Path) -> None:
    """A hard link whose target goes through a symlink to the host names a file inside
    dest (absent here), never the host's file."""
    (tmp_path / "secret").write_text("s")
    with pytest.raises(UserError, match="invalid hard link"):
        _extract(tmp_path, _tar([
            ("up", b"", {"type": tarfile.SYMTYPE, "linkname": str(tmp_path)}),
            ("h", b"", {"type": tarfile.LNKTYPE, "linkname": "up/secret"}),
        ]))
    assert (tmp_path / "secret").stat().st_nlink == 1


def test_untar_parent_that_is_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot extract below f: not a directory"):
        _extract(tmp_path, _tar([("f", b"file", {}), ("f/x", b"x", {})]))


def _device_tar() -> bytes:
    return _tar([
        ("dev/", None, {}),
        ("dev/null", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3,
                           "mode": 0o666}),
        ("dev/loop0", b"", {"type": tarfile.BLKTYPE, "devmajor": 7, "devminor": 0}),
        ("dev/pipe", b"", {"type": tarfile.FIFOTYPE, "mode": 0o640}),
    ])


@pytest.mark.skipif(os.getuid() != 0, reason="mknod of real devices needs root")
def test_untar_keeps_devices_where_allowed(tmp_path: Path) -> None:
    import stat

    arch = tmp_path / "a.tar"
    arch.write_bytes(_device_tar())
    dest = tmp_path / "dest"
    dest.mkdir()
    assert untar(str(arch), str(dest), None) == []
    st = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert st.st_mode & 0o7777 == 0o666
    assert stat.S_ISBLK(os.lstat(dest / "dev/loop0").st_mode)
    assert stat.S_ISFIFO(os.lstat(dest / "dev/pipe").st_mode)


def test_untar_counts_devices_it_cannot_make(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In a user namespace mknod is EPERM: the devices are left out, one warning counts
    them, the rest of the archive is extracted."""
    def refused(*args: object, **kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", refused)
    arch = tmp_path / "a.tar"
    arch.write_bytes(_device_tar())
    dest = tmp_path / "dest"
    dest.mkdir()
    warnings = untar(str(arch), str(dest), None)
    assert warnings == ["a.tar: 2 device nodes left out: devices cannot be created inside "
                        "the build's user namespace"]
    assert sorted(os.listdir(dest / "dev")) == ["pipe"]


def test_untar_write_errors_name_the_entry(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system error (here ENOSPC) is a one-line error naming the entry."""
    import errno

    import pybuild.builder.executor.fileops as fileops

    def full(fd: int, data: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileops, "_write_all", full)
    with pytest.raises(UserError, match=r"cannot extract 'big' from a\.tar: No space left"):
        _extract(tmp_path, _tar([("big", b"x" * 10, {})]))

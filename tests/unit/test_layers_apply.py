"""apply_layer: path safety, malformed input, replacement rules, counted warnings."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.layers import LayerError, LayerWriter, apply_layer, write_tree
from pybuild.layers import apply as apply_mod


def _tar(build: Callable[[tarfile.TarFile], None]) -> io.BytesIO:
    """A hostile or unusual tar, written with Python's tarfile (an independent writer)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        build(t)
    buf.seek(0)
    return buf


def _add(
    t: tarfile.TarFile,
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    linkname: str = "",
    pax: dict[str, str] | None = None,
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    if pax:
        info.pax_headers = pax
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _writer_tar(build: Callable[[LayerWriter], None]) -> io.BytesIO:
    buf = io.BytesIO()
    w = LayerWriter(buf)
    build(w)
    w.close()
    buf.seek(0)
    return buf


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "a/b/../../../evil", ".."])
def test_dotdot_is_rejected(dest: Path, name: str) -> None:
    with pytest.raises(LayerError, match="escapes"):
        apply_layer(_tar(lambda t: _add(t, name, data=b"x")), str(dest))
    assert not (dest.parent / "evil").exists()


def test_absolute_names_stay_inside(dest: Path) -> None:
    apply_layer(_tar(lambda t: _add(t, "/etc/abs-file", data=b"x")), str(dest))
    assert (dest / "etc" / "abs-file").read_bytes() == b"x"


def test_symlinked_parents_resolve_inside_dest(dest: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    def build(t: tarfile.TarFile) -> None:
        _add(t, "abs", tarfile.SYMTYPE, linkname="/")
        _add(t, "up", tarfile.SYMTYPE, linkname="../../../../../..")
        _add(t, "host", tarfile.SYMTYPE, linkname=str(outside))
        _add(t, "abs/etc/pwned1", data=b"1")
        _add(t, "up/pwned2", data=b"2")
        _add(t, "host/pwned3", data=b"3")

    apply_layer(_tar(build), str(dest))
    assert (dest / "etc" / "pwned1").read_bytes() == b"1"
    assert (dest / "pwned2").read_bytes() == b"2"
    assert (dest / str(outside).lstrip("/") / "pwned3").read_bytes() == b"3"
    assert os.listdir(outside) == []
    assert not (tmp_path / "pwned2").exists()


def test_symlink_loop_is_an_error(dest: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        _add(t, "a", tarfile.SYMTYPE, linkname="b")
        _add(t, "b", tarfile.SYMTYPE, linkname="a")
        _add(t, "a/x", data=b"x")

    with pytest.raises(LayerError, match="too many symlinks"):
        apply_layer(_tar(build), str(dest))


def test_file_entry_replaces_symlink_instead_of_writing_through(dest: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")

    def build(t: tarfile.TarFile) -> None:
        _add(t, "f", tarfile.SYMTYPE, linkname=str(victim))
        _add(t, "f", data=b"overwritten?")

    apply_layer(_tar(build), str(dest))
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(dest / "f").st_mode)


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd", "esc/etc/passwd", "dir"])
def test_hardlinks_must_target_this_layer(dest: Path, target: str) -> None:
    before = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()

    def build(t: tarfile.TarFile) -> None:
        _add(t, "esc", tarfile.SYMTYPE, linkname="/")
        _add(t, "dir", tarfile.DIRTYPE)
        _add(t, "link", tarfile.LNKTYPE, linkname=target)

    with pytest.raises(LayerError):
        apply_layer(_tar(build), str(dest))
    assert not (dest / "link").exists()
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == before


@pytest.mark.parametrize("name", [".wh..", ".wh.", "d/.wh.."])
def test_bad_whiteout_names(dest: Path, name: str) -> None:
    with pytest.raises(LayerError):
        apply_layer(_tar(lambda t: _add(t, name)), str(dest))


def test_overlay_xattrs_in_a_layer_are_dropped(dest: Path) -> None:
    def build(w: LayerWriter) -> None:
        w.add_dir("d")
        w.add_bytes(
            "d/f",
            b"x",
            xattrs={
                "user.overlay.redirect": b"/etc",
                "trusted.overlay.opaque": b"y",
                "user.ok": b"1",
            },
        )

    stats = apply_layer(_writer_tar(build), str(dest))
    assert os.listxattr(dest / "d" / "f") == ["user.ok"]
    assert stats.skipped_xattrs == 2
    assert len([w for w in stats.warnings if w.startswith("dropped")]) == 2


def test_bad_checksum_and_truncation(dest: Path) -> None:
    good = _writer_tar(lambda w: w.add_bytes("f", b"x" * 1000)).getvalue()
    corrupt = bytearray(good)
    corrupt[0] ^= 0x20
    with pytest.raises(LayerError, match="checksum"):
        apply_layer(io.BytesIO(bytes(corrupt)), str(dest))
    with pytest.raises(LayerError, match="truncated"):
        apply_layer(io.BytesIO(good[:700]), str(dest))


def test_sparse_is_refused(dest: Path) -> None:
    with pytest.raises(LayerError, match="sparse"):
        apply_layer(_tar(lambda t: _add(t, "s", pax={"GNU.sparse.major": "1"})), str(dest))


def test_replacement_rules_when_flattening(dest: Path) -> None:
    (dest / "was-file").write_bytes(b"f")
    (dest / "was-dir").mkdir()
    (dest / "was-dir" / "child").write_bytes(b"c")
    (dest / "merge").mkdir(mode=0o700)
    (dest / "merge" / "old").write_bytes(b"o")

    def build(w: LayerWriter) -> None:
        w.add_dir("was-file")
        w.add_bytes("was-dir", b"now a file")
        w.add_dir("merge", mode=0o751, mtime=123)
        w.add_bytes("merge/new", b"n")

    apply_layer(_writer_tar(build), str(dest), overlay_format=False)
    assert stat.S_ISDIR(os.lstat(dest / "was-file").st_mode)
    assert (dest / "was-dir").read_bytes() == b"now a file"
    assert sorted(os.listdir(dest / "merge")) == ["new", "old"]
    st = os.stat(dest / "merge")
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime == 123


def test_opaque_after_its_siblings_keeps_this_layers_entries(dest: Path) -> None:
    (dest / "d" / "sub").mkdir(parents=True)
    (dest / "d" / "sub" / "lower").write_bytes(b"l")
    (dest / "d" / "lowerfile").write_bytes(b"l")

    def build(t: tarfile.TarFile) -> None:
        _add(t, "d", tarfile.DIRTYPE)
        _add(t, "d/sub", tarfile.DIRTYPE)
        _add(t, "d/sub/mine", data=b"m")
        _add(t, "d/.wh..wh..opq")

    apply_layer(_tar(build), str(dest), overlay_format=False)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "d",
        "d/sub",
        "d/sub/mine",
    ]


def test_whiteout_does_not_hide_its_own_layer(dest: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        _add(t, "f", data=b"mine")
        _add(t, ".wh.f")

    apply_layer(_tar(build), str(dest))
    assert (dest / "f").read_bytes() == b"mine"


def test_entry_after_whiteout_replaces_the_device(dest: Path) -> None:
    apply_layer(_tar(lambda t: [_add(t, ".wh.f"), _add(t, "f", data=b"x")]), str(dest))  # type: ignore[func-returns-value]
    assert (dest / "f").read_bytes() == b"x"


def test_root_entry_sets_dest_metadata_in_overlay_format(dest: Path) -> None:
    apply_layer(_writer_tar(lambda w: w.add_dir(".", mode=0o711, mtime=77)), str(dest))
    st = os.stat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime == 77


def test_chown_and_mknod_refusals_are_counted(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_chown(*a: object, **k: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    def no_mknod(path: bytes, mode: int = 0o600, device: int = 0) -> None:
        if device:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        os_mknod(path, mode, device)

    os_mknod = os.mknod
    monkeypatch.setattr(apply_mod.os, "chown", no_chown)
    monkeypatch.setattr(apply_mod.os, "fchown", no_chown)
    monkeypatch.setattr(apply_mod.os, "mknod", no_mknod)

    def build(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("dev/sda")
        info.type = tarfile.BLKTYPE
        info.devmajor, info.devminor = 8, 0
        t.addfile(info)
        _add(t, "owned", data=b"x")
        _add(t, ".wh.gone")

    stats = apply_layer(_tar(build), str(dest))
    assert stats.skipped_devices == 1 and not (dest / "dev" / "sda").exists()
    assert stats.chown_failures == 1
    assert stat.S_ISCHR(os.lstat(dest / "gone").st_mode)  # 0/0 whiteouts still work
    assert len(stats.warnings) == 2


def test_unprivileged_security_xattr_is_counted(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.setxattr

    def setxattr(target: object, name: str, value: bytes, *a: object, **k: object) -> None:
        if name.startswith("security."):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        real(target, name, value, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(apply_mod.os, "setxattr", setxattr)
    tar = _writer_tar(
        lambda w: w.add_bytes("f", b"", xattrs={"security.capability": b"\x01", "user.a": b"b"})
    )
    stats = apply_layer(tar, str(dest))
    assert stats.skipped_xattrs == 1 and os.getxattr(dest / "f", "user.a") == b"b"


@pytest.mark.parametrize("with_dir_entry", [True, False])
def test_dir_recreated_over_its_whiteout_becomes_opaque(dest: Path, with_dir_entry: bool) -> None:
    def build(t: tarfile.TarFile) -> None:
        _add(t, ".wh.a")
        if with_dir_entry:
            _add(t, "a", tarfile.DIRTYPE)
        _add(t, "a/b", data=b"b")

    apply_layer(_tar(build), str(dest))
    assert stat.S_ISDIR(os.lstat(dest / "a").st_mode)
    assert os.getxattr(dest / "a", "user.overlay.opaque") == b"y"
    assert (dest / "a" / "b").read_bytes() == b"b"


def test_hardlink_with_long_names(dest: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    target = src / ("t" * 120) / ("u" * 200)
    link = src / ("l" * 150) / ("m" * 200)
    target.parent.mkdir(parents=True)
    link.parent.mkdir(parents=True)
    target.write_bytes(b"data")
    os.link(target, link)
    buf = io.BytesIO()
    write_tree(str(src), buf)
    buf.seek(0)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
        member = t.getmember(str(target.relative_to(src)))
        assert member.islnk() and len(member.linkname) > 255  # "l..." sorts first
    stats = apply_layer(buf, str(dest))
    assert stats.hardlinks == 1
    rel_t, rel_l = target.relative_to(src), link.relative_to(src)
    assert os.stat(dest / rel_l).st_ino == os.stat(dest / rel_t).st_ino


def test_archive_without_end_blocks_and_junk_after_them(dest: Path) -> None:
    good = _writer_tar(lambda w: w.add_bytes("f", b"x")).getvalue()
    stats = apply_layer(io.BytesIO(good[:-1024]), str(dest))
    assert (dest / "f").read_bytes() == b"x" and stats.entries == 1
    bad = good[:-512] + good[:512]  # one zero block, then another header
    with pytest.raises(LayerError, match="end-of-archive"):
        apply_layer(io.BytesIO(bad), str(dest))
    padded = good + bytes(10240 - len(good) % 10240)  # GNU tar's record padding
    stats = apply_layer(io.BytesIO(padded), str(dest))
    assert stats.tar_size == len(padded)
    assert stats.diff_id == hashlib.sha256(padded).hexdigest()

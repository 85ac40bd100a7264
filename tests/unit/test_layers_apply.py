"""apply_layer: path safety, malformed input, replacement rules, counted warnings."""

from __future__ import annotations

import contextlib
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


# -- confinement: every operation lands inside dest, at the moment it happens (F1) ----------


def _entries(t: tarfile.TarFile, entries: list[tuple[str, bytes, int, str]]) -> None:
    for name, kind, mode, link in entries:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 0
        t.addfile(info)


def _victim(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "file").write_bytes(b"precious")
    for p in (victim / "sub" / "file", victim / "sub", victim):
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
        os.utime(p, (1_234_567_890, 1_234_567_890))
    return victim, _snapshot(victim)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("overlay", [True, False])
def test_deferred_dir_metadata_never_follows_a_later_symlink(
    dest: Path, tmp_path: Path, overlay: bool
) -> None:
    victim, before = _victim(tmp_path)

    def build(t: tarfile.TarFile) -> None:
        _entries(t, [
            ("d", tarfile.DIRTYPE, 0o755, ""),
            ("d/sub", tarfile.DIRTYPE, 0o777, ""),
            ("d", tarfile.SYMTYPE, 0o777, str(victim)),
        ])

    apply_layer(_tar(build), str(dest), overlay_format=overlay)
    assert _snapshot(victim) == before
    assert os.readlink(dest / "d") == str(victim)


@pytest.mark.parametrize("overlay", [True, False])
def test_entries_through_a_replaced_parent_stay_inside(
    dest: Path, tmp_path: Path, overlay: bool
) -> None:
    """The parent of later entries becomes a symlink out of the tree: they are written
    where the symlink points *inside* dest, and deferred metadata goes nowhere."""
    victim, before = _victim(tmp_path)

    def build(t: tarfile.TarFile) -> None:
        _entries(t, [
            ("d", tarfile.DIRTYPE, 0o755, ""),
            ("d/sub", tarfile.DIRTYPE, 0o777, ""),
            ("d", tarfile.SYMTYPE, 0o777, str(victim)),
            ("d/sub", tarfile.DIRTYPE, 0o777, ""),
            ("d/sub/file", tarfile.SYMTYPE, 0o777, "/etc/shadow"),
            ("d/.wh.sub", tarfile.REGTYPE, 0o644, ""),
            ("d/new", tarfile.DIRTYPE, 0o777, ""),
        ])
        _add(t, "d/sub/written", data=b"inside")

    apply_layer(_tar(build), str(dest), overlay_format=overlay)
    assert _snapshot(victim) == before
    inside = dest / str(victim).lstrip("/")
    assert (inside / "sub" / "written").read_bytes() == b"inside"
    assert stat.S_IMODE(os.stat(inside / "new").st_mode) == 0o777


def test_opaque_and_whiteout_through_a_symlink_stay_inside(dest: Path, tmp_path: Path) -> None:
    victim, before = _victim(tmp_path)

    def build(t: tarfile.TarFile) -> None:
        _entries(t, [("d", tarfile.SYMTYPE, 0o777, str(victim))])
        _add(t, "d/.wh..wh..opq")
        _add(t, "d/sub/.wh.file")
        _add(t, "d/.wh.sub")

    for overlay in (False, True):
        apply_layer(_tar(build), str(dest), overlay_format=overlay)
        assert _snapshot(victim) == before


def test_hardlink_through_an_inner_symlink_resolves_inside(dest: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        _add(t, "a/f", data=b"data")
        _entries(t, [("b", tarfile.SYMTYPE, 0o777, "/a")])
        _add(t, "l", tarfile.LNKTYPE, linkname="b/f")

    apply_layer(_tar(build), str(dest))
    assert os.stat(dest / "l").st_ino == os.stat(dest / "a" / "f").st_ino


def test_hardlink_to_a_symlink_links_the_symlink(dest: Path, tmp_path: Path) -> None:
    victim, before = _victim(tmp_path)

    def build(t: tarfile.TarFile) -> None:
        _entries(t, [("s", tarfile.SYMTYPE, 0o777, str(victim / "sub" / "file"))])
        _add(t, "l", tarfile.LNKTYPE, linkname="s")

    apply_layer(_tar(build), str(dest))
    assert os.path.islink(dest / "l") and os.lstat(dest / "l").st_ino == os.lstat(dest / "s").st_ino
    assert _snapshot(victim) == before


def test_duplicate_entries_last_one_wins(dest: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        _add(t, "x", data=b"file")
        _entries(t, [("x", tarfile.DIRTYPE, 0o751, "")])
        _add(t, "x/child", data=b"c")
        _entries(t, [("x", tarfile.DIRTYPE, 0o705, "")])
        _add(t, "y", data=b"one")
        _add(t, "y", data=b"two")
        _entries(t, [("z", tarfile.DIRTYPE, 0o700, "")])
        _add(t, "z", data=b"now a file")
        _add(t, "w/inner", data=b"i")  # implicit parent w (0755) ...
        _entries(t, [("w", tarfile.DIRTYPE, 0o701, "")])  # ... then its own entry

    apply_layer(_tar(build), str(dest), overlay_format=False)
    assert stat.S_IMODE(os.stat(dest / "x").st_mode) == 0o705
    assert (dest / "x" / "child").read_bytes() == b"c"
    assert (dest / "y").read_bytes() == b"two"
    assert (dest / "z").read_bytes() == b"now a file"
    assert stat.S_IMODE(os.stat(dest / "w").st_mode) == 0o701


def test_a_dir_replaced_then_recreated_does_not_take_the_old_mode(dest: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        _entries(t, [("d", tarfile.DIRTYPE, 0o700, "")])
        _add(t, "d", data=b"file")
        _add(t, "d2/x", data=b"x")
        _entries(t, [("d", tarfile.SYMTYPE, 0o777, "d2")])
        _add(t, "d/y", data=b"y")

    apply_layer(_tar(build), str(dest), overlay_format=False)
    assert stat.S_IMODE(os.stat(dest / "d2").st_mode) == 0o755
    assert (dest / "d2" / "y").read_bytes() == b"y"


def test_deep_trees_beyond_path_max(dest: Path) -> None:
    name = "/".join(["d" * 200] * 30)  # 6 KB, past PATH_MAX (4096)

    apply_layer(_tar(lambda t: _add(t, name + "/f", data=b"deep")), str(dest))
    fd = os.open(dest, os.O_RDONLY)
    try:
        for part in name.split("/"):
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("f", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"deep"
    finally:
        os.close(fd)


# -- privileges: devices, set-id bits, capabilities (F7) ----------------------------------------


def _privileged_tar() -> io.BytesIO:
    """Set-id files, a capability and a set-gid dir (LayerWriter), then two device nodes
    (tarfile: LayerWriter only archives real devices)."""

    def build(w: LayerWriter) -> None:
        w.add_bytes("bin/suid", b"#!/bin/sh\n", mode=0o4755)
        w.add_bytes("bin/sgid", b"#!/bin/sh\n", mode=0o2755)
        w.add_bytes("bin/cap", b"x", xattrs={"security.capability": _CAP_SETUID})
        w.add_dir("shared", mode=0o2775)

    out = io.BytesIO()
    with tarfile.open(fileobj=_writer_tar(build)) as src, tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT
    ) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        for name, kind, (major, minor) in (("dev/mem", tarfile.CHRTYPE, (1, 1)),
                                           ("dev/disk", tarfile.BLKTYPE, (7, 0))):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.devmajor, info.devminor = kind, 0o666, major, minor
            dst.addfile(info)
    out.seek(0)
    return out


# vfs_cap_data revision 2 with cap_setuid in permitted and effective.
_CAP_SETUID = bytes.fromhex("01000002" "80000000" "00000000" "00000000" "00000000")


def test_host_safe_leaves_out_devices_setid_and_capabilities(dest: Path) -> None:
    stats = apply_layer(_privileged_tar(), str(dest), overlay_format=False,
                        privileges=apply_mod.HOST_SAFE)
    assert not (dest / "dev" / "mem").exists() and not (dest / "dev" / "disk").exists()
    assert stats.dropped_devices == 2
    assert stat.S_IMODE(os.stat(dest / "bin" / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "bin" / "sgid").st_mode) == 0o755
    assert stats.stripped_setid == 2
    assert "security.capability" not in os.listxattr(dest / "bin" / "cap")
    assert stats.dropped_capabilities == 1
    # A set-gid directory grants nothing; it keeps its bit.
    assert stat.S_IMODE(os.stat(dest / "shared").st_mode) == 0o2775


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and security.capability need root")
def test_keep_all_writes_them_as_root(dest: Path) -> None:
    stats = apply_layer(_privileged_tar(), str(dest), overlay_format=False)
    st = os.lstat(dest / "dev" / "mem")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and stats.devices == 2
    assert stat.S_IMODE(os.stat(dest / "bin" / "suid").st_mode) == 0o4755
    assert os.getxattr(dest / "bin" / "cap", "security.capability") == _CAP_SETUID


# -- limits and file system errors (F12) -----------------------------------------------------


def _zeros_tar(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("zeros")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        t.addfile(info, io.BufferedReader(Zeros()))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_decompression_bomb_is_refused_naming_the_layer(dest: Path, kind: str) -> None:
    import gzip

    import zstandard

    from pybuild.layers.decompress import ExpansionLimits
    from pybuild.layers.errors import LayerTooLargeError

    raw = _zeros_tar(64 << 20)
    blob = gzip.compress(raw, 6) if kind == "gzip" else zstandard.ZstdCompressor().compress(raw)
    assert len(blob) < len(raw) // 100
    limits = ExpansionLimits(max_ratio=100, ratio_floor=1 << 20)
    with pytest.raises(LayerTooLargeError, match=r"layer sha256:abc is a decompression bomb"):
        apply_layer(io.BytesIO(blob), str(dest), limits=limits, layer="layer sha256:abc")
    # Stopped early: far less than the 64 MiB was written.
    assert (dest / "zeros").stat().st_size < 8 << 20
    # The same layer under the defaults (256 MiB floor) is fine: real layers never trip.
    apply_layer(io.BytesIO(blob), str(tmp_dest(dest)))


def tmp_dest(dest: Path) -> Path:
    other = dest.parent / "other"
    other.mkdir()
    return other


def test_absolute_size_limit(dest: Path) -> None:
    from pybuild.layers.decompress import ExpansionLimits
    from pybuild.layers.errors import LayerTooLargeError

    raw = _zeros_tar(4 << 20)
    with pytest.raises(LayerTooLargeError, match=r"past the limit of 1\.0 MiB"):
        apply_layer(io.BytesIO(raw), str(dest), limits=ExpansionLimits(max_bytes=1 << 20))


@pytest.mark.parametrize("length", [300, 5000])
def test_overlong_names_are_a_clear_error(dest: Path, length: int) -> None:
    from pybuild.layers.errors import LayerWriteError

    name = "a" * length
    with pytest.raises(LayerWriteError, match="File name too long") as info:
        apply_layer(_tar(lambda t: _add(t, f"dir/{name}", data=b"x")), str(dest),
                    layer="layer sha256:abc")
    text = str(info.value)
    assert text.startswith("unpacking layer sha256:abc: cannot write 'dir/aaa")
    assert len(text) < 300
    assert info.value.hint and "255 bytes" in info.value.hint


def test_full_disk_is_a_clear_error(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.layers.errors import LayerWriteError

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(apply_mod.os, "write", full)
    with pytest.raises(LayerWriteError, match=r"cannot write .big. into .*No space left"):
        apply_layer(_tar(lambda t: _add(t, "big", data=b"x" * 100)), str(dest))


# -- malformed input never escapes as anything but a LayerError --------------------------------


def test_nul_bytes_bad_owners_and_absurd_times(dest: Path) -> None:
    from tests import hostile_layouts as hl

    for entry, message in (
        (hl.f(b"a" * 120 + b"\0b", b"x"), "NUL byte"),  # long: in a PAX record
        (hl.sym("s", "/etc" + "x" * 120 + "\0x"), "NUL byte"),
        (hl.f("x", b"x", xattrs={"user.a\0b": b"1"}), "NUL byte"),
        (hl.f("o", b"x", uid=1 << 40), "invalid owner"),
    ):
        data = hl.tar([entry])
        if entry.name == "o":  # base-256 numbers: what GNU tar writes for big ids
            data = bytearray(data)
            data[108:116] = b"\x80" + (1 << 40).to_bytes(7, "big")
            data[148:156] = b" " * 8
            data[148:156] = b"%06o\0 " % sum(data[:512])
            data = bytes(data)
        with pytest.raises(LayerError, match=message):
            apply_layer(io.BytesIO(data), str(dest))
    apply_layer(io.BytesIO(hl.tar([hl.f("t", b"x", mtime=10**15)])), str(dest))
    assert os.stat(dest / "t").st_mtime > 9e9  # clamped to what utimensat takes


def test_mutated_layers_only_raise_layer_errors(tmp_path: Path) -> None:
    import random
    import shutil

    from tests import hostile_layouts as hl

    base = hl.tar([
        hl.d("a"), hl.f("a/f", b"data" * 30, 0o4755, xattrs={"user.x": b"1"}),
        hl.sym("a/s", "/etc"), hl.hard("a/h", "a/f"), hl.Entry("a/fifo", hl.FIFO),
        hl.f("b/" + "x" * 150, b"long", uid=5, gid=6), hl.f(".wh.z"), hl.f("a/.wh..wh..opq"),
    ])
    rng = random.Random(9)
    for i in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.choice([0, 0x2E, 0x2F, 0x37, 0xFF,
                                                         rng.randrange(256)])
        for off in range(0, len(data) - 512, 512):  # mostly past the checksum check
            if data[off + 257 : off + 262] == b"ustar" and rng.random() < 0.9:
                data[off + 148 : off + 156] = b" " * 8
                data[off + 148 : off + 156] = b"%06o\0 " % sum(data[off : off + 512])
        dest = tmp_path / f"d{i}"
        dest.mkdir()
        with contextlib.suppress(LayerError):
            apply_layer(io.BytesIO(bytes(data)), str(dest), overlay_format=i % 2 == 0)
        shutil.rmtree(dest)

"""Upper dir -> layer: whiteouts, opaque dirs, overlay bookkeeping, then applying it."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pybuild.layers import LayerError, apply_layer, write_diff_from_upper

# chown to other ids, mknod of devices and trusted.* xattrs need root.
NEEDS_ROOT = pytest.mark.requires("root")
pytestmark = NEEDS_ROOT


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def make_upper(root: Path) -> None:
    """What the kernel leaves in an upper dir after a RUN step (hand-made)."""
    root.mkdir()
    os.setxattr(root, "user.overlay.impure", b"y")
    os.setxattr(root, "user.overlay.uuid", b"0123456789abcdef")
    etc = root / "etc"
    etc.mkdir()  # copied up only because a child changed
    os.setxattr(etc, "user.overlay.origin", b"\x00\xfb!")
    os.setxattr(etc, "user.overlay.impure", b"y")
    os.setxattr(etc, "user.keep", b"me")
    (etc / "passwd").write_text("root:x:0:0\n")
    os.setxattr(etc / "passwd", "user.overlay.origin", b"\x00\xfb")
    _whiteout(etc / "shadow")
    os.link(etc / "shadow", etc / "group")  # the kernel hard-links whiteouts together
    _whiteout(root / "olddir")
    os.link(root / "olddir", root / "oldfile")
    opq = root / "opq"
    opq.mkdir()
    os.setxattr(opq, "user.overlay.opaque", b"y")
    (opq / "new").write_text("n")
    topq = root / "topq"
    topq.mkdir()
    os.setxattr(topq, "trusted.overlay.opaque", b"y")  # rootful overlay, no userns
    fuse = root / "fuse"
    fuse.mkdir()
    os.setxattr(fuse, "user.fuseoverlayfs.opaque", b"y")
    (fuse / ".wh..wh..opq").write_bytes(b"")
    _whiteout(fuse / ".wh..opq")
    (fuse / "kept").write_text("k")
    fusewh = root / "fusewh"
    fusewh.mkdir()
    (fusewh / ".wh.gone").write_bytes(b"")  # fuse-overlayfs' fallback whiteout file
    bin_ = root / "bin"
    bin_.mkdir()
    (bin_ / "tool").write_bytes(b"\x7fELF")
    os.chmod(bin_ / "tool", 0o4755)
    os.link(bin_ / "tool", bin_ / "tool2")
    os.symlink("tool", bin_ / "alias")


def _entries(data: bytes) -> list[tuple[str, bytes, str, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m.name, m.type, m.linkname, m.size) for m in t.getmembers()]


def _diff(upper: Path, **kw: object) -> bytes:
    buf = io.BytesIO()
    write_diff_from_upper(str(upper), buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


REG, DIR, LNK, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE

EXPECTED = [
    (".wh.olddir", REG, "", 0),
    (".wh.oldfile", REG, "", 0),
    ("bin", DIR, "", 0),
    ("bin/alias", SYM, "tool", 0),
    ("bin/tool", REG, "", 4),
    ("bin/tool2", LNK, "bin/tool", 0),
    ("etc", DIR, "", 0),
    ("etc/.wh.group", REG, "", 0),
    ("etc/.wh.shadow", REG, "", 0),
    ("etc/passwd", REG, "", 11),
    ("fuse", DIR, "", 0),
    ("fuse/.wh..wh..opq", REG, "", 0),
    ("fuse/kept", REG, "", 1),
    ("fusewh", DIR, "", 0),
    ("fusewh/.wh.gone", REG, "", 0),
    ("opq", DIR, "", 0),
    ("opq/.wh..wh..opq", REG, "", 0),
    ("opq/new", REG, "", 1),
    ("topq", DIR, "", 0),
    ("topq/.wh..wh..opq", REG, "", 0),
]


def test_upper_dir_entries_exactly(tmp_path: Path) -> None:
    make_upper(tmp_path / "up")
    data = _diff(tmp_path / "up")
    assert _entries(data) == EXPECTED
    assert b"overlay." not in data and b"fuseoverlayfs" not in data
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        etc = t.getmember("etc")
        assert etc.pax_headers == {"SCHILY.xattr.user.keep": "me"}
        assert t.getmember("bin/tool").mode == 0o4755
        assert t.getmember("etc/passwd").pax_headers == {}


def test_upper_diff_is_deterministic(tmp_path: Path) -> None:
    make_upper(tmp_path / "up")
    assert _diff(tmp_path / "up", mtime=0) == _diff(tmp_path / "up", mtime=0)


def test_lower_dirs_drop_markers_that_hide_nothing(tmp_path: Path) -> None:
    make_upper(tmp_path / "up")
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "shadow").write_text("s")
    (lower / "fuse").mkdir()
    (lower / "oldfile").write_text("o")
    os.symlink("/", lower / "fusewh")  # a symlink is not a dir: nothing below it
    names = [e[0] for e in _entries(_diff(tmp_path / "up", lower_dirs=[str(lower)]))]
    assert ".wh.olddir" not in names and "etc/.wh.group" not in names
    assert "opq/.wh..wh..opq" not in names and "fusewh/.wh.gone" not in names
    assert {".wh.oldfile", "etc/.wh.shadow", "fuse/.wh..wh..opq"} <= set(names)


@pytest.mark.parametrize("name", ["user.overlay.redirect", "trusted.overlay.redirect"])
def test_redirect_dir_is_refused(tmp_path: Path, name: str) -> None:
    up = tmp_path / "up"
    (up / "moved").mkdir(parents=True)
    os.setxattr(up / "moved", name, b"/orig")
    with pytest.raises(LayerError, match="redirect_dir"):
        _diff(up)


def test_metacopy_is_refused(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.mkdir()
    (up / "f").write_bytes(b"")
    os.setxattr(up / "f", "user.overlay.metacopy", b"")
    with pytest.raises(LayerError, match="metacopy"):
        _diff(up)


def test_diff_applies_in_overlay_format(tmp_path: Path) -> None:
    make_upper(tmp_path / "up")
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = apply_layer(io.BytesIO(_diff(tmp_path / "up")), str(dest))
    assert stats.whiteouts == 5 and stats.opaques == 3
    for rel in ("olddir", "oldfile", "etc/shadow", "etc/group", "fusewh/gone"):
        st = os.lstat(dest / rel)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, rel
    for rel in ("opq", "topq", "fuse"):
        assert os.getxattr(dest / rel, "user.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest / "fuse")) == ["kept"]
    assert os.getxattr(dest / "etc", "user.keep") == b"me"
    assert os.stat(dest / "bin" / "tool").st_ino == os.stat(dest / "bin" / "tool2").st_ino
    # re-diffing the applied layer gives the same tar: the formats agree
    assert _diff(dest) == _diff(tmp_path / "up")


def test_diff_applies_by_flattening(tmp_path: Path) -> None:
    make_upper(tmp_path / "up")
    lower = tmp_path / "lower"
    for rel, content in {
        "etc/passwd": "old",
        "etc/shadow": "s",
        "etc/group": "g",
        "etc/hosts": "h",
        "opq/old1": "1",
        "opq/sub/old2": "2",
        "olddir/x": "x",
        "oldfile": "o",
        "fusewh/gone": "g",
        "fusewh/stays": "s",
        "topq/t": "t",
        "keep/k": "k",
    }.items():
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(content)
    apply_layer(io.BytesIO(_diff(tmp_path / "up")), str(lower), overlay_format=False)
    files = sorted(str(p.relative_to(lower)) for p in lower.rglob("*"))
    assert files == [
        "bin",
        "bin/alias",
        "bin/tool",
        "bin/tool2",
        "etc",
        "etc/hosts",
        "etc/passwd",
        "fuse",
        "fuse/kept",
        "fusewh",
        "fusewh/stays",
        "keep",
        "keep/k",
        "opq",
        "opq/new",
        "topq",
    ]
    assert (lower / "etc" / "passwd").read_text() == "root:x:0:0\n"
    assert not any("overlay" in k for k in os.listxattr(lower / "opq"))

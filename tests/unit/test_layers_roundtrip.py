"""tree -> tar -> apply gives back the same tree; foreign tars apply too."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.layers import apply_layer, compress_stream, write_tree

MTIME = 1_600_000_000

# chown to other ids, mknod of devices and trusted.* xattrs need root.
NEEDS_ROOT = pytest.mark.requires("root")
pytestmark = NEEDS_ROOT


def snapshot(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything a layer must preserve, keyed by relative path (bytes)."""
    base = os.fsencode(root)
    out: dict[bytes, tuple[object, ...]] = {}
    first: dict[tuple[int, int], bytes] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            link = None
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                link = first.setdefault((st.st_dev, st.st_ino), rel)
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(path, k, follow_symlinks=False))
                    for k in os.listxattr(path, follow_symlinks=False)
                )
            )
            out[rel] = (
                kind,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns // 1_000_000_000,
                extra,
                link,
                xattrs,
            )
    return out


def build_tree(root: Path) -> None:
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("key=value\n")
    (root / "empty").write_bytes(b"")
    (root / "big").write_bytes(os.urandom(3 << 20) + b"end")
    (root / "user").mkdir()
    (root / "user" / "file").write_bytes(b"owned")
    os.chown(root / "user" / "file", 1000, 1000)
    os.chown(root / "user", 1000, 1000)
    (root / "suid").write_bytes(b"s")
    os.chmod(root / "suid", 0o4755)
    (root / "sgid").write_bytes(b"g")
    os.chmod(root / "sgid", 0o2711)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "ro").mkdir()
    (root / "ro" / "inside").write_bytes(b"i")
    os.chmod(root / "ro", 0o555)
    os.symlink("etc/conf", root / "rel-link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("missing", root / "dangling")
    os.link(root / "etc" / "conf", root / "hard1")
    os.link(root / "etc" / "conf", root / "user" / "hard2")
    os.mkfifo(root / "fifo")
    os.chmod(root / "fifo", 0o640)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(root / "null", 0o666)
    os.setxattr(root / "etc" / "conf", "user.foo", b"bar")
    os.setxattr(root / "etc", "user.dir", b"\x00\xff binary")
    cap = root / "ping"
    cap.write_bytes(b"\x7fELF")
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(cap)], check=True)
    else:
        os.setxattr(cap, "security.capability", bytes.fromhex("0100000200200000" + "00" * 12))
    long_dir = root / ("d" * 100) / ("e" * 100) / ("f" * 100)  # > 255-byte paths
    long_dir.mkdir(parents=True)
    (long_dir / ("g" * 150)).write_bytes(b"long")
    (root / "ünïcödé-名前").write_bytes(b"utf8")
    (root / os.fsdecode(b"latin1-\xe9")).write_bytes(b"not utf8")
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    build_tree(root)
    return root


@pytest.mark.parametrize("overlay_format", [True, False])
def test_round_trip_is_exact(tree: Path, tmp_path: Path, overlay_format: bool) -> None:
    buf = io.BytesIO()
    write_tree(str(tree), buf)
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = apply_layer(io.BytesIO(buf.getvalue()), str(dest), overlay_format=overlay_format)
    assert snapshot(dest) == snapshot(tree)
    assert stats.hardlinks == 2
    assert stats.chown_failures == stats.skipped_xattrs == stats.skipped_devices == 0
    assert stats.tar_size == len(buf.getvalue())
    assert stats.diff_id == hashlib.sha256(buf.getvalue()).hexdigest()
    # and the result writes back to the very same bytes
    again = io.BytesIO()
    write_tree(str(dest), again)
    assert again.getvalue() == buf.getvalue()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_round_trip_through_compression(tree: Path, tmp_path: Path, kind: str) -> None:
    raw = io.BytesIO()
    write_tree(str(tree), raw)
    blob = io.BytesIO()
    diff_id, size, _, _ = compress_stream(io.BytesIO(raw.getvalue()), blob, kind)  # type: ignore[arg-type]
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = apply_layer(io.BytesIO(blob.getvalue()), str(dest))
    assert stats.diff_id == diff_id and stats.tar_size == size
    assert snapshot(dest) == snapshot(tree)


def test_gnu_tar_archives_apply(tree: Path, tmp_path: Path) -> None:
    """GNU tar as an independent writer, in both its formats."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed")
    for fmt in ("gnu", "posix"):
        out = tmp_path / f"{fmt}.tar"
        cmd = ["tar", f"--format={fmt}", "--xattrs", "--xattrs-include=*", "-cf", str(out)]
        subprocess.run([*cmd, "-C", str(tree), "."], check=True)
        dest = tmp_path / f"dest-{fmt}"
        dest.mkdir()
        with open(out, "rb") as f:
            apply_layer(f, str(dest))
        got = snapshot(dest)
        want = snapshot(tree)
        if fmt == "gnu":  # the gnu format has no xattrs
            got = {k: v[:7] for k, v in got.items()}
            want = {k: v[:7] for k, v in want.items()}
        assert got == want, fmt


def test_python_tarfile_archives_apply(tmp_path: Path) -> None:
    """Python's tarfile as another writer: GNU long names and PAX."""
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            d = tarfile.TarInfo("dir")
            d.type = tarfile.DIRTYPE
            d.mode = 0o700
            t.addfile(d)
            name = "dir/" + ("n" * 90 if fmt == tarfile.USTAR_FORMAT else "n" * 250)
            info = tarfile.TarInfo(name)
            info.size = 3
            info.uid = 42
            info.mtime = MTIME
            t.addfile(info, io.BytesIO(b"abc"))
        dest = tmp_path / f"dest{fmt}"
        dest.mkdir()
        apply_layer(io.BytesIO(buf.getvalue()), str(dest))
        target = dest / name
        assert target.read_bytes() == b"abc"
        assert os.stat(target).st_uid == 42
        assert os.stat(target).st_mtime == MTIME
        assert os.stat(dest / "dir").st_mode & 0o777 == 0o700

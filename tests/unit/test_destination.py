"""The destination of an archive (F8): a regular file is replaced atomically; nothing that
is not one is ever renamed over (devices and FIFOs are written in place); a terminal, a
directory or a missing parent is a clear error. Device nodes are made in a scratch dir
(never the host's /dev/null)."""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
import threading
from pathlib import Path

import pytest

from pybuild.errors import UserError
from pybuild.transports.destination import open_destination, writes_in_place
from tests.tooling import require

DATA = b"archive bytes\n" * 1000


def _write(dest: object, data: bytes = DATA) -> None:
    with open_destination(dest, what="test archive") as out:  # type: ignore[arg-type]
        out.write(data)


def _no_temp(directory: Path) -> None:
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_regular_file_is_replaced_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    dest.write_bytes(b"old")
    old_inode = dest.stat().st_ino
    _write(dest)
    assert dest.read_bytes() == DATA
    assert dest.stat().st_ino != old_inode  # a new file renamed over the old one
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert not writes_in_place(dest)
    _no_temp(tmp_path)


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), open_destination(dest) as out:
        out.write(b"partial")
        raise RuntimeError("killed half-way")
    assert dest.read_bytes() == b"old"
    _no_temp(tmp_path)


def test_a_new_file_is_created_but_never_its_directory(tmp_path: Path) -> None:
    _write(tmp_path / "new.tar")
    assert (tmp_path / "new.tar").read_bytes() == DATA
    with pytest.raises(UserError, match=r"directory .*missing/deeper does not exist") as info:
        _write(tmp_path / "missing" / "deeper" / "x.tar")
    assert "mkdir -p" in (info.value.hint or "")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"[Nn]ot a directory"):
        _write(tmp_path / "file" / "x.tar")


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory"):
        _write(tmp_path)
    _no_temp(tmp_path)


def test_a_char_device_is_written_in_place(tmp_path: Path) -> None:
    require("root")
    node = tmp_path / "dev-null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    assert writes_in_place(node)
    _write(node)
    st = os.lstat(node)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    _no_temp(tmp_path)
    # through a symlink too: the link and the device both stay
    link = tmp_path / "link"
    os.symlink(node, link)
    _write(link)
    assert link.is_symlink() and stat.S_ISCHR(os.lstat(node).st_mode)


def test_a_fifo_is_streamed(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    _write(fifo)
    reader.join(timeout=30)
    assert got == [DATA]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_to_a_file_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.tar"
    target.write_bytes(b"old")
    link = tmp_path / "link.tar"
    os.symlink("real.tar", link)
    _write(link)
    assert link.is_symlink() and target.read_bytes() == DATA
    dangling = tmp_path / "dangling.tar"
    os.symlink("made.tar", dangling)
    _write(dangling)
    assert dangling.is_symlink() and (tmp_path / "made.tar").read_bytes() == DATA


def test_a_terminal_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leader, follower = os.openpty()
    try:
        with pytest.raises(UserError, match="refusing to write the test archive to a "
                                            "terminal"):
            _write(os.ttyname(follower))

        class TTY(io.BytesIO):
            def isatty(self) -> bool:
                return True

        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(TTY()))
        with pytest.raises(UserError, match=r"terminal \(stdout\)") as info:
            _write("-")
        assert "redirect" in (info.value.hint or "")
    finally:
        os.close(leader)
        os.close(follower)


def test_dash_is_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer))
    _write("-")
    assert buffer.getvalue() == DATA
    assert writes_in_place("-")


def test_a_socket_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(UserError, match="it is a socket"):
            _write(path)


def test_streams_are_written_as_given() -> None:
    out = io.BytesIO()
    _write(out)
    assert out.getvalue() == DATA

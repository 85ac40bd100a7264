"""Where an archive is written: the one destination helper of every archive writer.

A regular file (or a path that does not exist yet) gets the archive atomically: a temp
file next to it, renamed over it once complete, so a killed export leaves the old file
or none. Nothing that is not a regular file is ever renamed over: a device, a FIFO or a
symlink is written in place (as `tar -f /dev/null` or `> fifo` would; a symlink to a
file, `/dev/stdout` redirected to one, is truncated and written through); `-` is
stdout. A terminal is refused (an archive on a terminal is never what was meant), a
directory is an error, and so is a missing parent directory (it is not created: a
mistyped path must not grow a tree).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pybuild.errors import UserError

Dest = str | os.PathLike[str] | BinaryIO
STDOUT = "-"
_FILE_MODE = 0o644


def _terminal(what: str, where: str) -> UserError:
    return UserError(f"refusing to write the {what} to a terminal ({where})",
                     hint="give dest=FILE, or redirect stdout to a file or a pipe")


def _stdout(what: str) -> BinaryIO:
    out = sys.stdout.buffer
    if out.isatty():
        raise _terminal(what, "stdout")
    return out


def writes_in_place(dest: Dest) -> bool:
    """True when the archive goes straight to `dest` (a stream, stdout, a device, a FIFO,
    a symlink), False when it replaces a regular file (or creates one) through a temp
    file next to it."""
    if not isinstance(dest, str | os.PathLike):
        return True
    path = os.fspath(dest)
    if path == STDOUT:
        return True
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return not stat.S_ISREG(st.st_mode)


def _check_parent(path: Path, what: str) -> None:
    parent = path.parent
    try:
        st = os.stat(parent)
    except FileNotFoundError:
        raise UserError(f"cannot write the {what} to {path}: directory {parent} does not "
                        "exist", hint=f"create it first (mkdir -p {parent})") from None
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"cannot write the {what} to {path}: {parent} is not a directory")


@contextlib.contextmanager
def _replace_file(path: Path, what: str) -> Iterator[BinaryIO]:
    _check_parent(path, what)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # the temp file is ours: mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _in_place(path: Path, what: str, *, truncate: bool) -> Iterator[BinaryIO]:
    """A device, a FIFO or a symlink: opened as it is, never renamed over; a link to a
    regular file (or to nothing) is truncated (created), as `> link` would."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY
    if truncate:
        flags |= os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(path, flags, _FILE_MODE)
    except OSError as exc:
        reason = ("it is a socket" if exc.errno == errno.ENXIO else exc.strerror)
        raise UserError(f"cannot write the {what} to {path}: {reason}") from None
    with os.fdopen(fd, "wb") as f:
        if f.isatty():
            raise _terminal(what, str(path))
        yield f
        f.flush()


@contextlib.contextmanager
def open_destination(dest: Dest, *, what: str = "archive") -> Iterator[BinaryIO]:
    """A binary file to write the archive into (see the module docstring for the rules).

    `what` names the archive in errors ("OCI archive", "docker archive", ...)."""
    if not isinstance(dest, str | os.PathLike):
        yield dest
        dest.flush()
        return
    if os.fspath(dest) == STDOUT:
        out = _stdout(what)
        yield out
        out.flush()
        return
    path = Path(dest)
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        lst = None
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {path}: {exc.strerror}") from None
    if lst is None or stat.S_ISREG(lst.st_mode):
        with _replace_file(path, what) as f:
            yield f
        return
    try:
        st: os.stat_result | None = os.stat(path)  # what a symlink leads to
    except FileNotFoundError:
        st = None  # a dangling link: its target is created
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {path}: {exc.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path} is a directory; expected a path for the {what} file",
                        hint="name a file inside it, e.g. dest=" + str(path / "image.tar"))
    with _in_place(path, what, truncate=st is None or stat.S_ISREG(st.st_mode)) as f:
        yield f


@contextlib.contextmanager
def replace_file(path: Path, *, what: str = "file") -> Iterator[BinaryIO]:
    """A file inside a directory pybuild writes (a layout's blob, its index.json): always
    a temp file renamed into place, whatever is at `path` (it is pybuild's own tree)."""
    with _replace_file(path, what) as f:
        yield f

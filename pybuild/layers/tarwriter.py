"""A deterministic PAX tar writer for image layers.

Headers are written by hand rather than with `tarfile` so that every byte is
under our control: ustar blocks (magic "ustar\\0", version "00"), numeric
fields as zero-padded octal with a NUL, empty uname/gname, no atime/ctime,
integer mtimes, and a PAX extended header only when a value does not fit
ustar (long or non-ASCII names, big ids/sizes/mtimes, xattrs), with its
records sorted by key. Names follow containerd's changeWriter: relative, and
directories end with "/". Same inputs give byte-identical output.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from typing import BinaryIO

from pybuild.layers import tarformat as tf
from pybuild.layers.errors import LayerError
from pybuild.layers.xattrs import read_content

CHUNK = 1 << 20
# Files up to this size are read whole into the pending buffer: fewer, larger
# writes to the (often compressing) output stream.
_SMALL_FILE = 64 << 10
_FLUSH_AT = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _ascii_truncated(name: bytes, size: int) -> bytes:
    return bytes(b for b in name if b < 0x80)[:size]


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Split a long ASCII name into ustar (prefix, name), as Go's archive/tar does."""
    length = len(name)
    if length <= tf.NAME_SIZE or not name.isascii():
        return None
    if length > tf.PREFIX_SIZE + 1:
        length = tf.PREFIX_SIZE + 1
    elif name[length - 1 : length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix_len = len(name) - i - 1
    if i <= 0 or suffix_len > tf.NAME_SIZE or suffix_len == 0 or i > tf.PREFIX_SIZE:
        return None
    return name[:i], name[i + 1 :]


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pax_header_name(name: bytes) -> bytes:
    head, _, tail = name.rstrip(b"/").rpartition(b"/")
    joined = (head + b"/" if head else b"") + b"PaxHeaders.0/" + tail
    return _ascii_truncated(joined, tf.NAME_SIZE).rstrip(b"/")


def _ustar_block(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    prefix: bytes = b"",
) -> bytearray:
    h = bytearray(tf.BLOCK)
    h[0 : len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % uid
    h[116:124] = b"%07o\0" % gid
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[148:156] = b"        "
    h[156:157] = typeflag
    h[157 : 157 + len(linkname)] = linkname
    h[257:265] = tf.USTAR_MAGIC
    h[329:337] = b"%07o\0" % devmajor
    h[337:345] = b"%07o\0" % devminor
    h[345 : 345 + len(prefix)] = prefix
    h[148:156] = b"%06o\0 " % sum(h)
    return h


def _arcname(arcname: str, is_dir: bool) -> bytes:
    name = os.fsencode(arcname)
    while name.startswith((b"/", b"./")):
        name = name[2:] if name.startswith(b"./") else name[1:]
    name = name.rstrip(b"/")
    if name in (b"", b"."):
        return b"./"
    return name + b"/" if is_dir else name


class LayerWriter:
    """Writes tar entries to `out`. `out.write` must not keep the buffer it is given.

    If `out` has a `copy_fd(fd, size) -> int` (appends up to `size` bytes of the file
    open at `fd` from its offset 0, returns how many), big file contents go through it
    instead of being read into Python (FileHashWriter copies them in-kernel).
    """

    def __init__(self, out: BinaryIO, *, mtime: int | None = None) -> None:
        self._out = out
        self._copy_fd: Callable[[int, int], int] | None = getattr(out, "copy_fd", None)
        self._epoch = mtime
        self._pending = bytearray()
        self._links: dict[tuple[int, int], bytes] = {}
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)
        self._closed = False

    # -- public API -------------------------------------------------------

    def add_path(
        self,
        arcname: str,
        path: str | bytes,
        st: os.stat_result | None = None,
        *,
        xattrs: Mapping[str, bytes] | None = None,
    ) -> bool:
        """Add one filesystem object (not recursive). Returns False for skipped sockets."""
        if st is None:
            st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return False  # sockets cannot be represented; containerd skips them too
        is_dir = stat.S_ISDIR(mode)
        name = _arcname(arcname, is_dir)
        perm = stat.S_IMODE(mode)
        mtime = self._clamp(st.st_mtime_ns // 1_000_000_000)
        uid, gid = st.st_uid, st.st_gid
        if xattrs is None:
            xattrs = read_content(path)
        if is_dir:
            self._header(name, tf.DIR, perm, uid, gid, 0, mtime, xattrs=xattrs)
            return True
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                self._header(name, tf.LINK, perm, uid, gid, 0, mtime, linkname=first)
                return True
            self._links[key] = name
        if stat.S_ISREG(mode):
            self._header(name, tf.REG, perm, uid, gid, st.st_size, mtime, xattrs=xattrs)
            self._copy_file(path, st.st_size)
        elif stat.S_ISLNK(mode):
            target = os.readlink(os.fsencode(path))
            self._header(name, tf.SYMLINK, perm, uid, gid, 0, mtime, linkname=target, xattrs=xattrs)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = tf.CHR if stat.S_ISCHR(mode) else tf.BLK
            self._header(
                name,
                kind,
                perm,
                uid,
                gid,
                0,
                mtime,
                devmajor=os.major(st.st_rdev),
                devminor=os.minor(st.st_rdev),
                xattrs=xattrs,
            )
        elif stat.S_ISFIFO(mode):
            self._header(name, tf.FIFO, perm, uid, gid, 0, mtime, xattrs=xattrs)
        else:
            raise LayerError(f"{os.fsdecode(path)}: unsupported file type {oct(mode)}")
        return True

    def add_whiteout(self, arcname_of_deleted: str) -> None:
        name = _arcname(arcname_of_deleted, False)
        head, sep, base = name.rpartition(b"/")
        if base in (b"", b".", b"./"):
            raise LayerError(f"cannot white out {arcname_of_deleted!r}")
        self._marker(head + sep + tf.WHITEOUT_PREFIX.encode() + base)

    def add_opaque(self, dir_arcname: str) -> None:
        name = _arcname(dir_arcname, True)
        prefix = b"" if name == b"./" else name
        self._marker(prefix + tf.WHITEOUT_OPAQUE.encode())

    def add_bytes(
        self,
        arcname: str,
        data: bytes,
        *,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int = 0,
        xattrs: Mapping[str, bytes] | None = None,
    ) -> None:
        name = _arcname(arcname, False)
        self._header(
            name, tf.REG, mode & 0o7777, uid, gid, len(data), self._clamp(mtime), xattrs=xattrs
        )
        self._pending += data
        self._pad(len(data))
        if len(self._pending) >= _FLUSH_AT:
            self._flush()

    def add_dir(
        self, arcname: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> None:
        self._header(
            _arcname(arcname, True), tf.DIR, mode & 0o7777, uid, gid, 0, self._clamp(mtime)
        )

    def add_symlink(
        self, arcname: str, target: str, *, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> None:
        name = _arcname(arcname, False)
        self._header(
            name, tf.SYMLINK, 0o777, uid, gid, 0, self._clamp(mtime), linkname=os.fsencode(target)
        )

    def close(self) -> None:
        """Write the two end-of-archive blocks. Does not close `out`."""
        if self._closed:
            return
        self._closed = True
        self._pending += tf.ZERO_BLOCK * 2
        self._flush()

    # -- internals ----------------------------------------------------------

    def _clamp(self, mtime: int) -> int:
        if self._epoch is not None and mtime > self._epoch:
            return self._epoch
        return mtime

    def _marker(self, name: bytes) -> None:
        # Whiteouts carry no metadata of their own; containerd writes mode 0, uid/gid 0.
        self._header(name, tf.REG, 0, 0, 0, 0, self._clamp(0))

    def _header(
        self,
        name: bytes,
        typeflag: bytes,
        mode: int,
        uid: int,
        gid: int,
        size: int,
        mtime: int,
        *,
        linkname: bytes = b"",
        devmajor: int = 0,
        devminor: int = 0,
        xattrs: Mapping[str, bytes] | None = None,
    ) -> None:
        if self._closed:
            raise LayerError("layer writer is closed")
        pax: dict[bytes, bytes] = {}
        prefix = b""
        field_name = name
        if len(name) > tf.NAME_SIZE or not name.isascii():
            split = _split_ustar(name)
            if split is not None:
                prefix, field_name = split
            else:
                pax[b"path"] = name
                field_name = _ascii_truncated(name, tf.NAME_SIZE)
        field_link = linkname
        if len(linkname) > tf.NAME_SIZE or not linkname.isascii():
            pax[b"linkpath"] = linkname
            field_link = _ascii_truncated(linkname, tf.NAME_SIZE)
        if not 0 <= uid <= tf.MAX_OCTAL_7:
            pax[b"uid"] = b"%d" % uid
            uid = 0
        if not 0 <= gid <= tf.MAX_OCTAL_7:
            pax[b"gid"] = b"%d" % gid
            gid = 0
        if size > tf.MAX_OCTAL_11:
            pax[b"size"] = b"%d" % size
            size_field = 0
        else:
            size_field = size
        if not 0 <= mtime <= tf.MAX_OCTAL_11:
            pax[b"mtime"] = b"%d" % mtime
            mtime = 0
        if devmajor > tf.MAX_OCTAL_7 or devminor > tf.MAX_OCTAL_7:
            raise LayerError(f"{os.fsdecode(name)}: device number too large for a tar header")
        if xattrs:
            for key, value in xattrs.items():
                pax_key = (tf.XATTR_PAX_PREFIX + key).encode("utf-8", "surrogateescape")
                pax[pax_key] = bytes(value)
        if (b"path" in pax and not _is_utf8(name)) or (
            b"linkpath" in pax and not _is_utf8(linkname)
        ):
            pax[b"hdrcharset"] = b"BINARY"
        if pax:
            data = b"".join(tf.pax_record(k, pax[k]) for k in sorted(pax))
            self._pending += _ustar_block(_pax_header_name(name), 0, 0, 0, len(data), 0, tf.PAX)
            self._pending += data
            self._pad(len(data))
        self._pending += _ustar_block(
            field_name,
            mode,
            uid,
            gid,
            size_field,
            mtime,
            typeflag,
            field_link,
            devmajor,
            devminor,
            prefix,
        )
        if len(self._pending) >= _FLUSH_AT:
            self._flush()

    def _pad(self, size: int) -> None:
        rem = size % tf.BLOCK
        if rem:
            self._pending += tf.ZERO_BLOCK[: tf.BLOCK - rem]

    def _flush(self) -> None:
        if self._pending:
            self._out.write(self._pending)
            self._pending = bytearray()

    def _copy_file(self, path: str | bytes, size: int) -> None:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if size <= _SMALL_FILE:
                data = os.read(fd, size) if size else b""
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        raise LayerError(f"{os.fsdecode(path)}: file shrank while being archived")
                    data += more
                self._pending += data
            elif self._copy_fd is not None:
                self._flush()
                if self._copy_fd(fd, size) != size:
                    raise LayerError(f"{os.fsdecode(path)}: file shrank while being archived")
            else:
                self._flush()
                view = self._view
                remaining = size
                while remaining > 0:
                    n = os.readv(fd, [view[: min(remaining, CHUNK)]])
                    if n == 0:
                        raise LayerError(f"{os.fsdecode(path)}: file shrank while being archived")
                    self._out.write(view[:n])
                    remaining -= n
        finally:
            os.close(fd)
        self._pad(size)
        if len(self._pending) >= _FLUSH_AT:
            self._flush()

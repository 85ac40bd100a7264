"""A streaming tar reader for layers: ustar, PAX and GNU long names.

Names, link targets and xattr values stay bytes, exactly as stored. The reader
hashes every byte it consumes (through the end-of-archive padding), which
gives the layer's diff_id for free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from pybuild.layers import tarformat as tf
from pybuild.layers.errors import LayerError

_READ = 1 << 20
_MAX_META = 16 << 20  # cap on PAX / GNU long-name payloads
_HEADER_ONLY = (tf.LINK, tf.SYMLINK, tf.DIR, tf.CHR, tf.BLK, tf.FIFO)


@dataclass(slots=True)
class TarEntry:
    name: bytes
    type: bytes  # one of the tarformat type flags, regular files normalised to REG
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _int_field(value: bytes, what: str) -> int:
    try:
        return int(float(value)) if b"." in value else int(value)
    except ValueError:
        raise LayerError(f"bad PAX {what} value {value!r}") from None


class TarReader:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._remaining = 0  # data bytes of the current entry not yet consumed
        self._padding = 0
        self._sha = hashlib.sha256()
        self.size = 0  # bytes consumed from the stream
        self._global: dict[bytes, bytes] = {}

    @property
    def diff_id(self) -> str:
        return self._sha.hexdigest()

    # -- raw input --------------------------------------------------------

    def _fill(self) -> bool:
        try:
            chunk = self._stream.read(_READ)
        except OSError as err:  # the blob itself cannot be read (EIO, bad bzip2 data)
            raise LayerError(f"cannot read the layer tar: {err.strerror or err}") from None
        if not chunk:
            return False
        self._sha.update(chunk)
        self.size += len(chunk)
        self._buf = self._buf[self._pos :] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
        return True

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            if not self._fill():
                raise LayerError("layer tar is truncated")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def _skip(self, n: int) -> None:
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._fill():
                    raise LayerError("layer tar is truncated")
                continue
            step = min(avail, n)
            self._pos += step
            n -= step

    def drain(self) -> None:
        """Consume (and hash) whatever follows the end-of-archive marker."""
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)

    # -- entry data ---------------------------------------------------------

    def copy_data(self, write: Callable[[memoryview], object]) -> int:
        """Pass the rest of the current entry's data to `write`, in chunks."""
        total = 0
        while self._remaining > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._fill():
                    raise LayerError("layer tar is truncated")
                continue
            step = min(avail, self._remaining)
            write(memoryview(self._buf)[self._pos : self._pos + step])
            self._pos += step
            self._remaining -= step
            total += step
        return total

    def _finish_entry(self) -> None:
        self._skip(self._remaining + self._padding)
        self._remaining = 0
        self._padding = 0

    # -- headers ------------------------------------------------------------

    def __iter__(self) -> Iterator[TarEntry]:
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        zero_blocks = 0
        while True:
            self._finish_entry()
            if not self._fill_to(tf.BLOCK):
                if len(self._buf) == self._pos:
                    return  # like Go and GNU tar: a clean EOF ends the archive
                raise LayerError("layer tar is truncated")
            block = self._read_exact(tf.BLOCK)
            if block == tf.ZERO_BLOCK:
                zero_blocks += 1
                if zero_blocks == 2:
                    self.drain()
                    return
                continue
            if zero_blocks:
                raise LayerError("layer tar has data after an end-of-archive block")
            entry, size = self._parse_header(block)
            self._remaining = size
            self._padding = -size % tf.BLOCK
            kind = entry.type
            if kind in (tf.PAX, tf.PAX_GLOBAL, tf.GNU_LONGNAME, tf.GNU_LONGLINK):
                if size > _MAX_META:
                    raise LayerError("layer tar has an oversized extended header")
                data = self._read_exact(size)
                self._remaining = 0
                if kind == tf.PAX:
                    pax.update(self._parse_pax(data))
                elif kind == tf.PAX_GLOBAL:
                    self._global.update(self._parse_pax(data))
                elif kind == tf.GNU_LONGNAME:
                    long_name = tf.cstring(data)
                else:
                    long_link = tf.cstring(data)
                continue
            if kind == tf.GNU_SPARSE or any(k.startswith(b"GNU.sparse.") for k in pax):
                raise LayerError(f"{entry.name!r}: sparse tar entries are not supported")
            if long_name is not None:
                entry.name = long_name
            if long_link is not None:
                entry.linkname = long_link
            records = {**self._global, **pax} if self._global else pax
            if records:
                self._apply_pax(entry, records)
                if b"size" in records:
                    self._remaining = entry.size
                    self._padding = -entry.size % tf.BLOCK
            if entry.type in (tf.AREG, tf.CONT):
                entry.type = tf.DIR if entry.name.endswith(b"/") else tf.REG
            if entry.type in _HEADER_ONLY:
                # Like Go's archive/tar: these types never have data, whatever size says.
                self._remaining = self._padding = 0
            pax = {}
            long_name = long_link = None
            yield entry

    def _fill_to(self, n: int) -> bool:
        while len(self._buf) - self._pos < n:
            if not self._fill():
                return False
        return True

    def _parse_header(self, block: bytes) -> tuple[TarEntry, int]:
        try:
            stored = tf.parse_number(block[148:156])
        except ValueError:
            stored = -1
        if not tf.checksum_ok(block, stored):
            raise LayerError("layer tar has a header with a bad checksum")
        magic = block[257:265]
        name = tf.cstring(block[0:100])
        if magic[:6] == b"ustar\0":
            prefix = tf.cstring(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        try:
            size = tf.parse_number(block[124:136])
            entry = TarEntry(
                name=name,
                type=block[156:157],
                mode=tf.parse_number(block[100:108]) & 0o7777,
                uid=tf.parse_number(block[108:116]),
                gid=tf.parse_number(block[116:124]),
                size=size,
                mtime=tf.parse_number(block[136:148]),
                linkname=tf.cstring(block[157:257]),
            )
            if entry.type in (tf.CHR, tf.BLK):
                entry.devmajor = tf.parse_number(block[329:337])
                entry.devminor = tf.parse_number(block[337:345])
        except ValueError:
            raise LayerError("layer tar has a malformed header field") from None
        if size < 0:
            raise LayerError("layer tar has a negative size")
        return entry, size

    @staticmethod
    def _parse_pax(data: bytes) -> dict[bytes, bytes]:
        try:
            return tf.parse_pax(data)
        except ValueError as e:
            raise LayerError(f"layer tar has a malformed PAX header: {e}") from None

    @staticmethod
    def _apply_pax(entry: TarEntry, records: dict[bytes, bytes]) -> None:
        for key, value in records.items():
            if key == b"path":
                entry.name = value
            elif key == b"linkpath":
                entry.linkname = value
            elif key == b"size":
                entry.size = _int_field(value, "size")
            elif key == b"uid":
                entry.uid = _int_field(value, "uid")
            elif key == b"gid":
                entry.gid = _int_field(value, "gid")
            elif key == b"mtime":
                entry.mtime = _int_field(value, "mtime")
            elif key.startswith(b"SCHILY.xattr."):
                name = key[len(b"SCHILY.xattr.") :].decode("utf-8", "surrogateescape")
                entry.xattrs[name] = value

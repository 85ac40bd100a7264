"""Clamp the timestamps in a layer tar to SOURCE_DATE_EPOCH (BuildKit's `rewrite-timestamp`).

As BuildKit's `converter.NewWithRewriteTimestamp` does, every mtime, atime and ctime later
than the epoch becomes the epoch; earlier ones stay. Unlike BuildKit, which decodes each
header and encodes it again with Go's tar writer, only the time fields are rewritten: the
ustar mtime field (and a GNU header's atime and ctime), and the `mtime`, `atime` and
`ctime` records of PAX headers. Every other byte is copied as it is, so the result depends
only on the input and the epoch, and a layer with nothing to clamp comes out identical.

The archive is read the way `tarreader` reads it (checksums checked, header-only types
have no data, GNU sparse entries refused), so no entry can hide from the rewrite.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from pybuild.layers import tarformat as tf
from pybuild.layers.errors import LayerError

_CHUNK = 1 << 20
_MAX_META = 16 << 20  # as tarreader: the cap on PAX / GNU long-name payloads
_TIME_KEYS = (b"mtime", b"atime", b"ctime")
_HEADER_ONLY = (tf.LINK, tf.SYMLINK, tf.DIR, tf.CHR, tf.BLK, tf.FIFO)
_GNU_TIMES = ((345, 357), (357, 369))  # atime, ctime of an old GNU header


@dataclass(frozen=True, slots=True)
class Retimed:
    source_diff_id: str  # sha256 hex of the tar read
    diff_id: str  # sha256 hex of the tar written
    size: int  # bytes written
    changed: bool  # whether any timestamp was clamped


class _Input:
    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.sha = hashlib.sha256()

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self._src.read(min(n - len(out), _CHUNK))
            if not chunk:
                break
            out += chunk
        self.sha.update(out)
        return bytes(out)

    def exact(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise LayerError("layer tar is truncated")
        return data


class _Output:
    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray) -> None:
        self.sha.update(data)
        self._dst.write(data)
        self.size += len(data)


def _clamp_record(value: bytes, epoch: int) -> bytes | None:
    """The new value of a PAX time record, or None if it is not later than the epoch."""
    try:
        when = Decimal(value.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        raise LayerError(f"layer tar has a malformed PAX time {value!r}") from None
    return b"%d" % epoch if when > epoch else None


def _pax_records(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(key, value, the record's bytes) in order; NUL padding after the last is dropped
    (it is rewritten only when a record changes)."""
    try:
        tf.parse_pax(data)  # validates the whole payload first
    except ValueError as exc:
        raise LayerError(f"layer tar has a malformed PAX header: {exc}") from None
    out = []
    pos = 0
    while pos < len(data) and data[pos] != 0:
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        record = data[pos:pos + length]
        key, _, value = record[sp - pos + 1:-1].partition(b"=")
        out.append((key, value, record))
        pos += length
    return out


def _retime_pax(data: bytes, epoch: int) -> tuple[bytes | None, dict[bytes, bytes]]:
    """The PAX payload with its time records clamped (None: nothing to change), and its
    records."""
    records = _pax_records(data)
    changed = False
    parts = []
    for key, value, raw in records:
        new = _clamp_record(value, epoch) if key in _TIME_KEYS else None
        if new is None:
            parts.append(raw)
        else:
            parts.append(tf.pax_record(key, new))
            changed = True
    return (b"".join(parts) if changed else None), {k: v for k, v, _ in records}


def _set_number(block: bytearray, start: int, end: int, value: int) -> None:
    width = end - start - 1
    block[start:end] = b"%0*o\0" % (width, value)


def _clamp_header(block: bytearray, epoch: int) -> bool:
    changed = False
    fields = [(136, 148)]
    if bytes(block[257:265]) == tf.GNU_MAGIC:
        fields += _GNU_TIMES
    for start, end in fields:
        try:
            when = tf.parse_number(bytes(block[start:end]))
        except ValueError:
            raise LayerError("layer tar has a malformed time field") from None
        if when > epoch:
            _set_number(block, start, end, epoch)
            changed = True
    return changed


def _seal(block: bytearray) -> bytes:
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _header(first: bytes) -> tuple[bytearray, int]:
    block = bytearray(first)
    try:
        stored = tf.parse_number(first[148:156])
        size = tf.parse_number(first[124:136])
    except ValueError:
        raise LayerError("layer tar has a malformed header field") from None
    if not tf.checksum_ok(first, stored):
        raise LayerError("layer tar has a header with a bad checksum")
    if size < 0:
        raise LayerError("layer tar has a negative size")
    return block, size


def _copy(inp: _Input, out: _Output, n: int) -> None:
    while n > 0:
        chunk = inp.exact(min(n, _CHUNK))
        out.write(chunk)
        n -= len(chunk)


def clamp_timestamps(src: BinaryIO, dst: BinaryIO, epoch: int) -> Retimed:
    """Copy the layer tar `src` into `dst` with its timestamps clamped to `epoch`."""
    if epoch < 0:
        raise LayerError(f"SOURCE_DATE_EPOCH {epoch} is negative")
    inp, out = _Input(src), _Output(dst)
    changed = False
    global_records: dict[bytes, bytes] = {}
    local: dict[bytes, bytes] = {}
    zero_blocks = 0
    while True:
        first = inp.read(tf.BLOCK)
        if not first:
            break  # a clean EOF ends the archive, as Go's and GNU tar's readers take it
        if len(first) != tf.BLOCK:
            raise LayerError("layer tar is truncated")
        if first == tf.ZERO_BLOCK:
            out.write(first)
            zero_blocks += 1
            if zero_blocks == 2:
                while rest := inp.read(_CHUNK):  # end of archive: the rest as it is
                    out.write(rest)
                break
            continue
        if zero_blocks:
            raise LayerError("layer tar has data after an end-of-archive block")
        block, size = _header(first)
        kind = bytes(block[156:157])
        if kind in (tf.PAX, tf.PAX_GLOBAL):
            if size > _MAX_META:
                raise LayerError("layer tar has an oversized extended header")
            data = inp.exact(size)
            pad = inp.exact(-size % tf.BLOCK)
            new, records = _retime_pax(data, epoch)
            if kind == tf.PAX:
                local.update(records)
            else:
                global_records.update(records)
            header_changed = _clamp_header(block, epoch)
            if new is not None:
                _set_number(block, 124, 136, len(new))
                data, pad = new, bytes(-len(new) % tf.BLOCK)
            if new is not None or header_changed:
                changed = True
                out.write(_seal(block))
            else:
                out.write(first)
            out.write(data)
            out.write(pad)
            continue
        if kind == tf.GNU_SPARSE or any(k.startswith(b"GNU.sparse.") for k in local):
            raise LayerError("sparse tar entries are not supported")
        if kind in (tf.GNU_LONGNAME, tf.GNU_LONGLINK):
            if size > _MAX_META:
                raise LayerError("layer tar has an oversized extended header")
        else:
            records = {**global_records, **local}
            if b"size" in records:
                try:
                    size = int(records[b"size"])
                except ValueError:
                    raise LayerError("layer tar has a malformed PAX size") from None
            if kind in _HEADER_ONLY:
                size = 0  # as Go's archive/tar (and tarreader): these never carry data
            local = {}
        if _clamp_header(block, epoch):
            changed = True
            out.write(_seal(block))
        else:
            out.write(first)
        _copy(inp, out, size + (-size % tf.BLOCK))
    return Retimed(source_diff_id=inp.sha.hexdigest(), diff_id=out.sha.hexdigest(),
                   size=out.size, changed=changed)

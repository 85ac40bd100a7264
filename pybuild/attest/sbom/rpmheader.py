"""The rpm header blob format (what rpm stores per package in its database), read in Python.

A header is `nindex` (u32 BE), `hsize` (u32 BE), `nindex` index entries of 16 bytes
(tag, type, offset, count: u32 BE each), then `hsize` bytes of data. Entries point into the
data; strings are NUL-terminated. Everything is bounds-checked: a hostile database gives a
`ValueError`, never a read outside the blob or an endless loop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Tags (rpmtag.h).
NAME, VERSION, RELEASE, EPOCH = 1000, 1001, 1002, 1003
SIZE, VENDOR, LICENSE, URL, ARCH = 1009, 1011, 1014, 1020, 1022
FILESIZES, FILEMODES, FILEDIGESTS = 1028, 1030, 1035
SOURCERPM = 1044
DIRINDEXES, BASENAMES, DIRNAMES = 1116, 1117, 1118
MODULARITYLABEL = 5096
FILEDIGESTALGO = 5011

# Types.
_CHAR, _INT8, _INT16, _INT32, _INT64 = 1, 2, 3, 4, 5
_STRING, _BIN, _STRING_ARRAY, _I18NSTRING = 6, 7, 8, 9
_WIDTHS = {_CHAR: 1, _INT8: 1, _INT16: 2, _INT32: 4, _INT64: 8}
_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}
_MAX_ENTRIES = 1 << 16
_MAX_DATA = 256 << 20

# PGPHASHALGO_* -> SPDX checksum algorithm names.
DIGEST_ALGOS = {1: "MD5", 2: "SHA1", 8: "SHA256", 9: "SHA384", 10: "SHA512", 11: "SHA224"}

Value = str | int | bytes | tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Header:
    tags: dict[int, Value]

    def string(self, tag: int) -> str:
        v = self.tags.get(tag)
        if isinstance(v, tuple) and v and isinstance(v[0], str):
            return v[0]
        return v if isinstance(v, str) else ""

    def integer(self, tag: int) -> int | None:
        v = self.tags.get(tag)
        if isinstance(v, tuple) and v and isinstance(v[0], int):
            return v[0]
        return v if isinstance(v, int) else None

    def strings(self, tag: int) -> tuple[str, ...]:
        v = self.tags.get(tag)
        if isinstance(v, str):
            return (v,)
        return tuple(x for x in v if isinstance(x, str)) if isinstance(v, tuple) else ()

    def integers(self, tag: int) -> tuple[int, ...]:
        v = self.tags.get(tag)
        if isinstance(v, int):
            return (v,)
        return tuple(x for x in v if isinstance(x, int)) if isinstance(v, tuple) else ()


def _cstrings(data: bytes, offset: int, count: int) -> tuple[str, ...]:
    out: list[str] = []
    pos = offset
    for _ in range(count):
        end = data.find(b"\0", pos)
        if end < 0:
            raise ValueError("unterminated string in rpm header")
        out.append(data[pos:end].decode("utf-8", "replace"))
        pos = end + 1
    return tuple(out)


def parse_header(blob: bytes) -> Header:
    if len(blob) < 8:
        raise ValueError("rpm header is truncated")
    nindex, hsize = struct.unpack_from(">II", blob, 0)
    if nindex > _MAX_ENTRIES or hsize > _MAX_DATA:
        raise ValueError("rpm header is too large")
    start = 8 + 16 * nindex
    if start + hsize > len(blob):
        raise ValueError("rpm header is truncated")
    data = blob[start : start + hsize]
    wanted = {NAME, VERSION, RELEASE, EPOCH, SIZE, VENDOR, LICENSE, URL, ARCH, FILESIZES,
              FILEMODES, FILEDIGESTS, SOURCERPM, DIRINDEXES, BASENAMES, DIRNAMES,
              MODULARITYLABEL, FILEDIGESTALGO}
    tags: dict[int, Value] = {}
    for i in range(nindex):
        tag, kind, offset, count = struct.unpack_from(">IIII", blob, 8 + 16 * i)
        if tag not in wanted:
            continue
        if offset > hsize or count > hsize + 1:
            raise ValueError(f"rpm header tag {tag} points outside the header")
        if kind in (_STRING, _I18NSTRING, _STRING_ARRAY):
            values = _cstrings(data, offset, count if kind != _STRING else 1)
            tags[tag] = values[0] if kind == _STRING else values
        elif kind in _WIDTHS:
            width = _WIDTHS[kind]
            if offset + width * count > hsize:
                raise ValueError(f"rpm header tag {tag} overruns the header")
            tags[tag] = struct.unpack_from(f">{count}{_FORMATS[width]}", data, offset)
        elif kind == _BIN:
            if offset + count > hsize:
                raise ValueError(f"rpm header tag {tag} overruns the header")
            tags[tag] = data[offset : offset + count]
    return Header(tags)

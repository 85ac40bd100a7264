"""Constants and low-level field codecs of the POSIX ustar/pax tar format."""

from __future__ import annotations

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)

# Type flags.
REG = b"0"
AREG = b"\0"  # pre-POSIX regular file
LINK = b"1"
SYMLINK = b"2"
CHR = b"3"
BLK = b"4"
DIR = b"5"
FIFO = b"6"
CONT = b"7"  # contiguous file: a regular file everywhere that matters
PAX = b"x"
PAX_GLOBAL = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"

USTAR_MAGIC = b"ustar\x0000"  # magic "ustar\0" + version "00"
GNU_MAGIC = b"ustar  \x00"

NAME_SIZE = 100
PREFIX_SIZE = 155
MAX_OCTAL_7 = 0o7777777  # 8-byte fields: 7 digits + NUL
MAX_OCTAL_11 = 0o77777777777  # 12-byte fields: 11 digits + NUL

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
XATTR_PAX_PREFIX = "SCHILY.xattr."


def pax_record(key: bytes, value: bytes) -> bytes:
    """One "%d key=value\\n" record; the length counts its own digits."""
    payload = b" " + key + b"=" + value + b"\n"
    n = len(payload)
    total = n + len(str(n))
    if len(str(total)) != len(str(n)):
        total = n + len(str(total))
    return b"%d" % total + payload


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # NUL padding some writers leave after the last record
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise ValueError("pax record without length")
        length = int(data[pos:sp])
        if length <= sp - pos or pos + length > end:
            raise ValueError("bad pax record length")
        record = data[sp + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise ValueError("bad pax record")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


def parse_number(field: bytes) -> int:
    """Octal text, or GNU base-256 when the high bit of the first byte is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
        if field[0] == 0xFF:  # negative two's complement
            value = int.from_bytes(field, "big", signed=True)
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    return int(text, 8)


def cstring(field: bytes) -> bytes:
    nul = field.find(b"\0")
    return field if nul < 0 else field[:nul]


def checksum_ok(block: bytes | bytearray, stored: int) -> bool:
    """Check a header against its stored sum (unsigned, or the historic signed variant)."""
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
    return stored == unsigned - 256 * high

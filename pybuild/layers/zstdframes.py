"""Follow the frame structure of a zstd stream (RFC 8878) without decoding it.

python-zstandard's stream reader reports a clean EOF when its input stops in
the middle of a frame, so a truncated blob would decompress to a silently
shorter tar. This tracker reads only frame and block headers and skips block
payloads, which costs next to nothing, and says whether the input ended on a
frame boundary.
"""

from __future__ import annotations

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50

_MAGIC, _FHD, _HEADER_REST, _BLOCK, _SKIP_SIZE = range(5)


class ZstdFrameTracker:
    def __init__(self) -> None:
        self._state = _MAGIC
        self._need = 4  # header bytes wanted for the current state
        self._have = bytearray()
        self._skip = 0  # payload bytes to pass over
        self._after_skip = _MAGIC
        self._checksum = False
        self.invalid = False  # not a zstd stream we understand: stop tracking

    @property
    def at_frame_boundary(self) -> bool:
        return self.invalid or (self._state == _MAGIC and not self._have and self._skip == 0)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end and not self.invalid:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if self._skip == 0:
                    self._enter(self._after_skip)
                continue
            take = min(self._need - len(self._have), end - pos)
            self._have += view[pos : pos + take]
            pos += take
            if len(self._have) == self._need:
                header = bytes(self._have)
                self._have.clear()
                self._header(header)

    def _enter(self, state: int) -> None:
        self._state = state
        self._need = {_MAGIC: 4, _FHD: 1, _BLOCK: 3, _SKIP_SIZE: 4}.get(state, self._need)

    def _header(self, header: bytes) -> None:
        state = self._state
        if state == _MAGIC:
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_MAGIC:
                self._enter(_FHD)
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._enter(_SKIP_SIZE)
            else:
                self.invalid = True
        elif state == _FHD:
            fhd = header[0]
            fcs_flag, single = fhd >> 6, (fhd >> 5) & 1
            self._checksum = bool((fhd >> 2) & 1)
            did_size = (0, 1, 2, 4)[fhd & 3]
            fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
            rest = (0 if single else 1) + did_size + fcs_size
            self._skip_then(rest, _BLOCK)
        elif state == _BLOCK:
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                self.invalid = True
                return
            payload = 1 if kind == 1 else size
            if last:
                self._skip_then(payload + (4 if self._checksum else 0), _MAGIC)
            else:
                self._skip_then(payload, _BLOCK)
        elif state == _SKIP_SIZE:
            self._skip_then(int.from_bytes(header, "little"), _MAGIC)

    def _skip_then(self, count: int, state: int) -> None:
        if count:
            self._skip = count
            self._after_skip = state
            self._state = _HEADER_REST
        else:
            self._enter(state)

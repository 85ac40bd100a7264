"""The zstd frame tracker knows exactly where frames end."""

from __future__ import annotations

import os
import random

import zstandard

from pybuild.layers.zstdframes import ZstdFrameTracker


def _frames() -> tuple[bytes, set[int]]:
    """Several kinds of frame back to back, and the offsets where each ends."""
    data = os.urandom(300_000) + bytes(500_000) + b"text " * 50_000
    parts = [
        zstandard.ZstdCompressor(level=3).compress(data),  # content size, no checksum
        zstandard.ZstdCompressor(level=1, write_checksum=True, threads=2).compress(data),
        zstandard.ZstdCompressor(write_content_size=False, write_dict_id=False).compress(b""),
        b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"skip!",  # skippable frame
        zstandard.ZstdCompressor(level=19, write_checksum=True).compress(b"x" * 70),
    ]
    ends, pos = set(), 0
    for part in parts:
        pos += len(part)
        ends.add(pos)
    return b"".join(parts), ends


def test_boundaries_are_exact_with_any_chunking() -> None:
    blob, ends = _frames()
    rng = random.Random(7)
    tracker = ZstdFrameTracker()
    pos = 0
    while pos < len(blob):
        step = rng.choice([1, 2, 3, 7, 512, 4096, 100_000])
        tracker.feed(blob[pos : pos + step])
        pos = min(pos + step, len(blob))
        assert not tracker.invalid
    assert tracker.at_frame_boundary
    # every prefix that is not a frame end is reported as truncated
    for cut in sorted(rng.sample(range(1, len(blob)), 300)) + sorted(ends):
        t = ZstdFrameTracker()
        t.feed(blob[:cut])
        assert t.at_frame_boundary == (cut in ends), cut

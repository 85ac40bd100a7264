"""Hash-and-write on a worker thread.

SHA-256 runs at about 1.4 GB/s per core here, and a layer needs two of them
(uncompressed and compressed). Hashing the compressed side on its own thread
(hashlib and file writes release the GIL) lets it overlap with the caller's
hashing and feeding of the compressor instead of adding to it.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import BinaryIO

_QUEUE_DEPTH = 32


class ThreadedHashWriter:
    """Hashes, counts and writes immutable chunks to `dst` in order, off the caller's thread."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._sha = hashlib.sha256()
        self.size = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._thread = threading.Thread(target=self._run, name="layer-hash-writer", daemon=True)
        self._thread.start()
        self._done = False

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._sha.update(chunk)
                self.size += len(chunk)
                self._dst.write(chunk)
            except BaseException as e:  # re-raised on the caller's thread
                self._error = e

    def put(self, chunk: bytes) -> None:
        """Queue a chunk; it must not be modified afterwards."""
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> str:
        """Wait for every queued chunk; the hex digest of everything written."""
        if not self._done:
            self._done = True
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()

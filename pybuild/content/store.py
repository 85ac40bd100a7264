"""The content store: blobs by digest, verified atomic writes, GC from roots.

Layout under the root: blobs/sha256/<hex> (read-only files), ingest/ (temp files).
A writer streams into ingest/, hashes as it goes, fsyncs, then renames into place, so a
reader never sees a partial blob and two processes writing the same blob both succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError

_CHUNK = 1 << 20


class BlobWriter:
    """Streams a blob into the store; `commit` verifies and publishes it."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        fd, self._tmp = tempfile.mkstemp(dir=store.ingest_dir, prefix="blob-")
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def commit(self, expected: Digest | None = None, expected_size: int | None = None) -> Digest:
        digest = Digest.from_hex(self._hash.hexdigest())
        try:
            if expected is not None and digest != expected:
                raise IntegrityError(
                    f"blob {expected}: digest mismatch (content hashes to {digest})")
            if expected_size is not None and self.size != expected_size:
                raise IntegrityError(
                    f"blob {digest}: size mismatch (expected {expected_size}, got {self.size})"
                )
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._tmp, 0o444)
            os.replace(self._tmp, self._store.blob_path(digest))
            self._done = True
            return digest
        finally:
            if not self._done:
                self.abort()

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)
        self._done = True

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: Digest) -> Path:
        if digest.algorithm != "sha256":
            raise NotFoundError(f"blob {digest}: only sha256 blobs are stored")
        return self.blobs_dir / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.blob_path(digest).exists()

    def size(self, digest: Digest) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the content store") from None

    def read(self, digest: Digest, *, what: str = "blob", verify: bool = True) -> bytes:
        """Read a whole (small) blob; verified by default — corrupt content is never returned."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{what} {digest} is not in the content store") from None
        if verify:
            actual = Digest.from_bytes(data)
            if actual != digest:
                raise IntegrityError(
                    f"{what} {digest} in the content store is corrupt (content hashes to "
                    f"{actual}); remove it with `pybuild prune --corrupt` or re-pull the image"
                )
        return data

    def open(self, digest: Digest, *, what: str = "blob") -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"{what} {digest} is not in the content store") from None

    def verify(self, digest: Digest) -> None:
        with self.open(digest) as f:
            actual, _ = Digest.from_stream(f)
        if actual != digest:
            raise IntegrityError(
                f"blob {digest} in the content store is corrupt (content hashes to {actual})"
            )

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def write(self, data: bytes, expected: Digest | None = None) -> Digest:
        digest = Digest.from_bytes(data)
        if expected is not None and digest != expected:
            raise IntegrityError(f"blob {expected}: digest mismatch (content hashes to {digest})")
        if self.has(digest):
            return digest
        with self.writer() as w:
            w.write(data)
            return w.commit(digest)

    def ingest_file(self, path: Path, digest: Digest | None = None) -> Digest:
        """Move a finished file into the store (same filesystem), hashing it if needed."""
        if digest is None:
            digest, _ = Digest.from_file(str(path))
        target = self.blob_path(digest)
        if target.exists():
            os.unlink(path)
            return digest
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(path, 0o444)
        os.replace(path, target)
        return digest

    def copy_from(self, src: BinaryIO, expected: Digest | None = None,
                  expected_size: int | None = None) -> Digest:
        with self.writer() as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
            return w.commit(expected, expected_size)

    def digests(self) -> Iterator[Digest]:
        for name in os.listdir(self.blobs_dir):
            if len(name) == 64:
                yield Digest.from_hex(name)

    def delete(self, digests: Iterable[Digest]) -> int:
        freed = 0
        for d in digests:
            p = self.blob_path(d)
            with contextlib.suppress(FileNotFoundError):
                freed += p.stat().st_size
                p.unlink()
        return freed

    def clean_ingest(self, older_than_s: float = 3600.0) -> None:
        """Remove temp files that a killed process left behind."""
        import time

        now = time.time()
        for name in os.listdir(self.ingest_dir):
            p = self.ingest_dir / name
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()

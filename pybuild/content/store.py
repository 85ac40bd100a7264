"""The content store: blobs by digest, verified atomic writes, GC from roots.

Layout under the root: blobs/sha256/<hex> (read-only files), ingest/ (temp files).
A writer streams into ingest/, hashes as it goes, fsyncs, then renames into place, so a
reader never sees a partial blob and two processes writing the same blob both succeed.

Every temp file in ingest/ is named for the process writing it (`KIND@TOKEN.RANDOM`),
and that process holds an flock on `owner@TOKEN.lock` for as long as it lives (the
scheme of the build dirs): once the lock is free, its files belong to a dead process
(a killed push, export or build) and are removed whatever their age, when a store is
opened (every command, so the next build) and by prune. `usage()` counts them.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError

_CHUNK = 1 << 20
# Temp files named the old way (no owner token) cannot be told dead from alive: they are
# removed once this old.
LEGACY_INGEST_AGE = 3600.0
_OWNER_PREFIX = "owner@"
_OWNER_SUFFIX = ".lock"


class _Owners:
    """This process's owner token per ingest dir, each held by an flock until exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, int]] = {}

    def token(self, ingest_dir: Path) -> str:
        key = os.fspath(ingest_dir)
        with self._lock:
            held = self._tokens.get(key)
            if held is None:
                held = self._tokens[key] = _publish_owner(ingest_dir)
            return held[0]

    def release_all(self) -> None:
        with self._lock:
            for key, (token, fd) in self._tokens.items():
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(key, _owner_lock(token)))
                os.close(fd)
            self._tokens.clear()

    def forget(self) -> None:
        """In a forked child: its writes get tokens of their own (the parent's lock goes
        with the parent)."""
        self._lock = threading.Lock()
        for _, fd in self._tokens.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._tokens = {}


def _owner_lock(token: str) -> str:
    return f"{_OWNER_PREFIX}{token}{_OWNER_SUFFIX}"


def _publish_owner(ingest_dir: Path) -> tuple[str, int]:
    """A new owner lock, created and locked under a pending name, then renamed into place:
    a sweeper never sees it unlocked (a pending one it removes is simply retried)."""
    while True:
        token = uuid.uuid4().hex[:12]
        final = ingest_dir / _owner_lock(token)
        pending = ingest_dir / f"{_owner_lock(token)}.new"
        fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(pending, final)
            return token, fd
        except FileNotFoundError:
            os.close(fd)  # a sweeper took the pending file for a dead one: try again
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(pending)
            raise


_OWNERS = _Owners()
atexit.register(_OWNERS.release_all)
os.register_at_fork(after_in_child=_OWNERS.forget)


def _token_of(name: str) -> str | None:
    """The owner token of an ingest file name; None for a legacy name."""
    kind, sep, rest = name.partition("@")
    if not sep or not kind:
        return None
    token = rest.partition(".")[0]
    return token if len(token) == 12 else None


def _locked(path: Path) -> bool:
    """Whether a live process holds the flock on `path` (False if there is no file)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # not ours to open (another user's): never taken for dead
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass(frozen=True, slots=True)
class StoreUsage:
    blobs: int  # bytes in published blobs
    ingest: int  # bytes in temp files of writes under way (or of dead ones not yet swept)

    @property
    def total(self) -> int:
        return self.blobs + self.ingest


class BlobWriter:
    """Streams a blob into the store; `commit` verifies and publishes it."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        fd, path = store.temp_file("blob")
        self._tmp = str(path)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    @property
    def digest(self) -> Digest:
        """The digest of what was written so far."""
        return Digest.from_hex(self._hash.hexdigest())

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
        # Leftovers of killed processes go as soon as anyone opens the store.
        self.clean_ingest(legacy_older_than=LEGACY_INGEST_AGE)

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
                    f"{actual})", hint="remove the image with `pybuild rmi` and pull or load it "
                         "again"
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

    def temp_file(self, kind: str) -> tuple[int, Path]:
        """A new temp file in ingest/ (open fd, path), named for this process so that a
        sweep can tell whether its writer is alive. Move it in with `ingest_file`."""
        token = _OWNERS.token(self.ingest_dir)
        fd, path = tempfile.mkstemp(dir=self.ingest_dir, prefix=f"{kind}@{token}.")
        return fd, Path(path)

    def clean_ingest(self, legacy_older_than: float = LEGACY_INGEST_AGE) -> int:
        """Remove the temp files of dead processes (any age), their owner locks, and
        legacy-named temp files older than `legacy_older_than`; returns bytes freed."""
        now = time.time()
        alive: dict[str, bool] = {}  # by owner token
        freed = 0
        try:
            names = os.listdir(self.ingest_dir)
        except OSError:
            return 0
        for name in names:
            if name.startswith(_OWNER_PREFIX):
                continue  # owner locks: after their files
            path = self.ingest_dir / name
            token = _token_of(name)
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                st = path.stat()
                if token is None:
                    dead = now - st.st_mtime > legacy_older_than
                else:
                    if token not in alive:
                        alive[token] = _locked(self.ingest_dir / _owner_lock(token))
                    dead = not alive[token]
                if dead:
                    path.unlink()
                    freed += st.st_size
        for name in names:
            if not name.startswith(_OWNER_PREFIX):
                continue
            if not _locked(self.ingest_dir / name):  # a final or a pending lock
                with contextlib.suppress(OSError):
                    os.unlink(self.ingest_dir / name)
        return freed

    def temp_files(self) -> list[Path]:
        """The temp files in ingest/ (writes under way, or leftovers not yet swept)."""
        return sorted(self.ingest_dir / n for n in os.listdir(self.ingest_dir)
                      if not n.startswith(_OWNER_PREFIX))

    def usage(self) -> StoreUsage:
        """Bytes in blobs and in ingest/ (what `du` shows)."""
        return StoreUsage(blobs=sum(_sizes(self.blobs_dir)),
                          ingest=sum(_sizes(self.ingest_dir)))


def _sizes(directory: Path) -> Iterator[int]:
    with os.scandir(directory) as it:
        for entry in it:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    yield entry.stat(follow_symlinks=False).st_size

"""Which repositories of which registry are known to hold a blob: the source of cross-repository
mounts.

Every blob a pull fetched (or found referenced by the manifests it read) and every blob a push
confirmed is recorded as (registry, repository, digest). Pushing to another repository of the
same registry then asks for `POST /blobs/uploads/?mount=<digest>&from=<repository>` before
uploading anything, so a CI push of a new image on the same base uploads only its new layers
(containerd keeps the same facts as `containerd.io/distribution.source.<registry>` labels).

One SQLite file in the pybuild root, in WAL mode with a busy timeout: concurrent pushes and
pulls (threads or processes) each commit their own rows; losing a race loses nothing but a
hint. The index is only a hint: a mount the registry answers with 202 simply uploads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_sources (
    registry TEXT NOT NULL,
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (registry, digest, repository)
) WITHOUT ROWID;
"""


class BlobSources:
    """The persistent (registry, digest) -> repositories index."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_SCHEMA)
            yield conn
        finally:
            conn.close()

    # A hint only: an unwritable or broken index (a read-only root, a full disk) must not fail
    # a push or a pull, so sqlite errors are swallowed here and nowhere else.

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        rows = [(registry, str(d), repository, time.time()) for d in digests]
        if not rows:
            return
        with contextlib.suppress(sqlite3.Error, OSError), self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO blob_sources VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")

    def forget(self, registry: str, repository: str, digest: str) -> None:
        with contextlib.suppress(sqlite3.Error, OSError), self._db() as conn:
            conn.execute("DELETE FROM blob_sources WHERE registry = ? AND digest = ? AND "
                         "repository = ?", (registry, str(digest), repository))

    def repositories(self, registry: str, digest: str, *, exclude: str = "",
                     limit: int = 3) -> list[str]:
        """The repositories last seen holding `digest` on `registry`, most recent first."""
        rows: list[tuple[str]] = []
        with contextlib.suppress(sqlite3.Error, OSError), self._db() as conn:
            rows = conn.execute(
                "SELECT repository FROM blob_sources WHERE registry = ? AND digest = ? AND "
                "repository != ? ORDER BY seen DESC LIMIT ?",
                (registry, str(digest), exclude, limit)).fetchall()
        return [str(r[0]) for r in rows]


def open_index(path: Path | None) -> BlobSources | None:
    return BlobSources(path) if path is not None else None

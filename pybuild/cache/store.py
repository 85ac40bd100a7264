"""Cache records: cache key -> result, in SQLite (WAL), so a killed build never corrupts it.

Keys are opaque digests computed by the builder. A record also keeps the key's parts and a
`step` identity (stage + instruction), so a later miss can say which part changed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pybuild.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    cache_key TEXT PRIMARY KEY,
    step TEXT NOT NULL,
    parts TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS records_step ON records(step, last_used);
"""


@dataclass(frozen=True, slots=True)
class CacheRecord:
    cache_key: str
    step: str
    parts: dict[str, Any]
    result: dict[str, Any]
    created: float
    last_used: float
    size: int
    description: str


class CacheStoreError(UserError):
    """The cache database cannot be used: a full disk, an I/O error, a read-only or
    damaged file. Names the file (and so the pybuild root) and the cause."""

    code = "cache-store"


def _store_error(path: Path, err: sqlite3.Error) -> CacheStoreError:
    cause = str(err) or type(err).__name__
    if "full" in cause:
        return CacheStoreError(f"cannot write the build cache {path}: the disk is full "
                               f"(SQLite: {cause})",
                               hint=f"free space on the file system of {path.parent}, e.g. "
                                    "with pybuild prune")
    if "not a database" in cause or "malformed" in cause:
        return CacheStoreError(f"the build cache {path} is damaged (SQLite: {cause})",
                               hint=f"remove {path} (the records are rebuilt by later "
                                    "builds)")
    return CacheStoreError(f"cannot use the build cache {path}: {cause}")


class _Guarded:
    """The connection, its errors turned into CacheStoreError (never an internal error
    naming only `OperationalError`)."""

    __slots__ = ("_db", "_path")

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as err:
            if isinstance(err, sqlite3.ProgrammingError):
                raise
            raise _store_error(self._path, err) from None

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        try:
            return self._db.executemany(sql, params)
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as err:
            if isinstance(err, sqlite3.ProgrammingError):
                raise
            raise _store_error(self._path, err) from None

    def executescript(self, sql: str) -> sqlite3.Cursor:
        try:
            return self._db.executescript(sql)
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as err:
            if isinstance(err, sqlite3.ProgrammingError):
                raise
            raise _store_error(self._path, err) from None

    def close(self) -> None:
        self._db.close()


class CacheStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(str(path), timeout=60, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as err:
            raise _store_error(path, err) from None
        self._db = _Guarded(db, path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._touched: dict[str, None] = {}  # keys used since the last flush, in order

    def close(self) -> None:
        self._flush_touches()
        self._db.close()

    @staticmethod
    def _row(row: tuple[Any, ...]) -> CacheRecord:
        return CacheRecord(cache_key=row[0], step=row[1], parts=json.loads(row[2]),
                           result=json.loads(row[3]), created=row[4], last_used=row[5],
                           size=row[6], description=row[7])

    _COLS = "cache_key, step, parts, result, created, last_used, size, description"

    def get(self, cache_key: str) -> CacheRecord | None:
        row = self._db.execute(f"SELECT {self._COLS} FROM records WHERE cache_key = ?",
                               (cache_key,)).fetchone()
        return self._row(row) if row else None

    def touch(self, cache_key: str) -> None:
        """Mark a record as used. Written with the others in one transaction (a cached
        build touches every step) when the store closes or a query orders by use; a
        killed build loses only these times."""
        self._touched[cache_key] = None

    def _flush_touches(self) -> None:
        if not self._touched:
            return
        now = time.time()
        keys, self._touched = list(self._touched), {}
        self._db.execute("BEGIN")
        try:
            self._db.executemany("UPDATE records SET last_used = ? WHERE cache_key = ?",
                                 [(now, k) for k in keys])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def put(self, cache_key: str, *, step: str, parts: dict[str, Any], result: dict[str, Any],
            size: int, description: str, created: float | None = None) -> None:
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO records (cache_key, step, parts, result, created, "
            "last_used, size, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (cache_key, step, json.dumps(parts, sort_keys=True),
             json.dumps(result, sort_keys=True), created or now, now, size, description),
        )

    def latest_for_step(self, step: str) -> CacheRecord | None:
        self._flush_touches()
        row = self._db.execute(
            f"SELECT {self._COLS} FROM records WHERE step = ? ORDER BY last_used DESC LIMIT 1",
            (step,)).fetchone()
        return self._row(row) if row else None

    def all(self) -> list[CacheRecord]:
        self._flush_touches()
        rows = self._db.execute(f"SELECT {self._COLS} FROM records ORDER BY last_used DESC")
        return [self._row(r) for r in rows.fetchall()]

    def delete(self, keys: list[str]) -> None:
        self._flush_touches()
        self._db.executemany("DELETE FROM records WHERE cache_key = ?", [(k,) for k in keys])

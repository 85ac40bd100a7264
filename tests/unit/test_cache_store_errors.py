"""F12: a full disk (or a damaged file) under the cache database is a one-line user
error naming the database and the cause, never `internal error: OperationalError`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pybuild.cache.store import CacheStore, CacheStoreError


def test_disk_full_names_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CacheStore(tmp_path / "cache.db")
    real = store._db._db  # the connection, under the guard

    class Full:
        def execute(self, *a: object, **k: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        executemany = executescript = execute

        def close(self) -> None:
            real.close()

    store._db._db = Full()  # type: ignore[assignment]
    with pytest.raises(CacheStoreError) as err:
        store.put("k", step="s", parts={}, result={}, size=0, description="")
    assert err.value.message.startswith(f"cannot write the build cache {tmp_path}/cache.db: "
                                        "the disk is full")
    assert err.value.exit_code == 1
    store._touched.clear()
    store.close()


def test_damaged_database(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CacheStoreError, match="is damaged"):
        CacheStore(db)


@pytest.mark.requires("root")
def test_really_full_file_system(tmp_path: Path) -> None:
    """On a 1 MiB tmpfs filled up: the real SQLite error, translated."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    store = None
    try:
        store = CacheStore(mnt / "cache.db")
        (mnt / "filler").write_bytes(b"\0" * 10)
        with open(mnt / "filler", "ab") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with pytest.raises(CacheStoreError, match=r"the disk is full|cannot use the build cache"):
            for i in range(2000):
                store.put(f"k{i}", step="s" * 1000, parts={"p": "x" * 1000}, result={},
                          size=0, description="")
    finally:
        if store is not None:
            store._db.close()
        subprocess.run(["umount", str(mnt)], check=True)

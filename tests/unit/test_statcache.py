"""The stat cache: one table per context root, loaded on first use, written only when
changed, entries a build did not see dropped, whole tables evicted oldest first."""

from __future__ import annotations

import hashlib
import marshal
import os
import time
from pathlib import Path

import pytest

from pybuild.context.statcache import MAX_TABLES, StatCache, evict
from pybuild.context.tree import BuildContext
from pybuild.errors import UserError


def _files(root: Path, n: int, prefix: str = "f") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"{prefix}{i}"
        p.write_text(f"content {i}\n")
        out.append(p)
    return out


def _digest_all(cache: StatCache, files: list[Path]) -> list[str]:
    return [cache.digest(str(p), os.stat(p)) for p in files]


def _tables(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.bin")) if directory.is_dir() else []


def test_digests_are_sha256_and_remembered(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path / "ctx", 3)
    shelf = tmp_path / "statcache"
    cache = StatCache(shelf).for_root(str(tmp_path / "ctx"))
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert _digest_all(cache, files) == expected
    cache.save()
    assert len(_tables(shelf)) == 1
    # A second build answers from the table without reading the files.
    again = StatCache(shelf).for_root(str(tmp_path / "ctx"))
    assert all(again.known(str(p), os.stat(p)) for p in files)

    def no_reads(*args: object, **kw: object) -> object:
        raise AssertionError("a known file was read")

    monkeypatch.setattr("pybuild.context.statcache.open", no_reads, raising=False)
    assert _digest_all(again, files) == expected


def test_one_table_per_context_root(tmp_path: Path) -> None:
    a, b = _files(tmp_path / "a", 2), _files(tmp_path / "b", 2)
    shelf = tmp_path / "statcache"
    caches = StatCache(shelf)
    _digest_all(caches.for_root(str(tmp_path / "a")), a)
    _digest_all(caches.for_root(str(tmp_path / "b")), b)
    caches.save()
    assert len(_tables(shelf)) == 2


def test_a_build_that_reads_no_context_loads_no_table(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    big = _files(tmp_path / "big", 50)
    shelf = tmp_path / "statcache"
    caches = StatCache(shelf)
    _digest_all(caches.for_root(str(tmp_path / "big")), big)
    caches.save()
    loads: list[bytes] = []
    real = marshal.loads

    def counting(data: bytes) -> object:
        loads.append(data)
        return real(data)

    monkeypatch.setattr(marshal, "loads", counting)
    small = _files(tmp_path / "small", 1)
    later = StatCache(shelf)
    ctx = BuildContext(str(tmp_path / "small"), None, later)  # the solver's shape
    ctx.digest(ctx.select(("f0",)))
    BuildContext(str(tmp_path / "big"), None, later)  # named, but never read
    later.save()
    assert loads == []  # small's table did not exist yet; big's was never opened
    assert small[0].exists()


def test_saved_only_when_changed(tmp_path: Path) -> None:
    files = _files(tmp_path / "ctx", 5)
    shelf = tmp_path / "statcache"
    first = StatCache(shelf)
    _digest_all(first.for_root(str(tmp_path / "ctx")), files)
    first.save()
    (table,) = _tables(shelf)
    before = table.stat()
    time.sleep(0.01)
    second = StatCache(shelf)
    _digest_all(second.for_root(str(tmp_path / "ctx")), files)
    second.save()
    after = table.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)  # not rewritten


def test_entries_the_last_build_did_not_see_are_dropped(tmp_path: Path) -> None:
    files = _files(tmp_path / "ctx", 6)
    shelf = tmp_path / "statcache"
    first = StatCache(shelf)
    _digest_all(first.for_root(str(tmp_path / "ctx")), files)
    first.save()
    files[-1].unlink()
    second = StatCache(shelf)
    _digest_all(second.for_root(str(tmp_path / "ctx")), files[:3])
    second.save()
    (table,) = _tables(shelf)
    entries = marshal.loads(table.read_bytes())["entries"]
    assert sorted(entries) == sorted(str(p) for p in files[:3])


def test_changed_files_are_read_again(tmp_path: Path) -> None:
    (f,) = _files(tmp_path / "ctx", 1)
    shelf = tmp_path / "statcache"
    cache = StatCache(shelf)
    old = cache.for_root(str(tmp_path / "ctx")).digest(str(f), os.stat(f))
    cache.save()
    f.write_text("other content, other size\n")
    new = StatCache(shelf).for_root(str(tmp_path / "ctx")).digest(str(f), os.stat(f))
    assert new != old and new == hashlib.sha256(f.read_bytes()).hexdigest()


def test_a_table_is_keyed_by_the_roots_inode_too(tmp_path: Path) -> None:
    files = _files(tmp_path / "ctx", 1)
    shelf = tmp_path / "statcache"
    cache = StatCache(shelf)
    _digest_all(cache.for_root(str(tmp_path / "ctx")), files)
    cache.save()
    (tmp_path / "ctx").rename(tmp_path / "old")  # kept: the new one has another inode
    files = _files(tmp_path / "ctx", 1)  # the same path, another directory
    again = StatCache(shelf)
    _digest_all(again.for_root(str(tmp_path / "ctx")), files)
    again.save()
    assert len(_tables(shelf)) == 2  # the old one is left to eviction


def test_a_damaged_table_is_an_empty_one(tmp_path: Path) -> None:
    files = _files(tmp_path / "ctx", 2)
    shelf = tmp_path / "statcache"
    cache = StatCache(shelf)
    _digest_all(cache.for_root(str(tmp_path / "ctx")), files)
    cache.save()
    (table,) = _tables(shelf)
    table.write_bytes(b"\x00garbage")
    fresh = StatCache(shelf).for_root(str(tmp_path / "ctx"))
    assert not fresh.known(str(files[0]), os.stat(files[0]))
    assert fresh.digest(str(files[0]), os.stat(files[0])) == hashlib.sha256(
        files[0].read_bytes()).hexdigest()


def test_the_single_file_of_earlier_versions_is_never_read_and_goes(tmp_path: Path) -> None:
    legacy = tmp_path / "cache" / "statcache.bin"
    legacy.parent.mkdir()
    legacy.write_bytes(marshal.dumps({f"/x/{i}": [1, 2, 3, 4, "00"] for i in range(1000)}))
    files = _files(tmp_path / "ctx", 1)
    cache = StatCache(legacy)
    _digest_all(cache.for_root(str(tmp_path / "ctx")), files)
    cache.save()
    assert not legacy.exists()
    assert len(_tables(tmp_path / "cache" / "statcache")) == 1


def test_unreadable_files_are_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    cache = StatCache(None).for_root(str(tmp_path / "ctx"))
    st = os.stat(tmp_path / "ctx")
    with pytest.raises(UserError, match=r"cannot read .*gone") as info:
        cache.digest(str(tmp_path / "ctx" / "gone"), st)
    assert info.value.code == "context-unreadable"


def _table_files(directory: Path, ages: list[float], size: int = 10) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    out = []
    for i, age in enumerate(ages):
        p = directory / f"{i:032x}.bin"
        p.write_bytes(b"x" * size)
        os.utime(p, (now - age, now - age))
        out.append(p)
    return out


def test_eviction_by_count_keeps_the_most_recently_used(tmp_path: Path) -> None:
    tables = _table_files(tmp_path, [float(i) for i in range(MAX_TABLES + 5)])
    removed = evict(tmp_path)
    assert sorted(removed) == sorted(tables[MAX_TABLES:])
    assert len(_tables(tmp_path)) == MAX_TABLES


def test_eviction_by_size_and_age(tmp_path: Path) -> None:
    tables = _table_files(tmp_path, [1.0, 2.0, 3.0, 40 * 86400.0], size=100)
    assert evict(tmp_path, max_bytes=250) == [tables[2], tables[3]]
    # the newest table stays even when it alone is over the size bound
    assert evict(tmp_path, max_bytes=10) == [tables[1]]
    assert _tables(tmp_path) == [tables[0]]


def test_loading_a_table_counts_as_using_it(tmp_path: Path) -> None:
    files = _files(tmp_path / "ctx", 1)
    shelf = tmp_path / "statcache"
    cache = StatCache(shelf)
    _digest_all(cache.for_root(str(tmp_path / "ctx")), files)
    cache.save()
    (table,) = _tables(shelf)
    os.utime(table, (1, 1))
    StatCache(shelf).for_root(str(tmp_path / "ctx")).known(str(files[0]), os.stat(files[0]))
    assert time.time() - table.stat().st_mtime < 60

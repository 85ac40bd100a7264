"""Content digests of context files, remembered per context root between builds.

A file whose (size, mtime, ctime, inode) did not change is not read again. Each context
root has its own table, in its own file (named for the root's path, device and inode):
it is loaded when a build first asks about a file of that root, so a build that reads
no context (or another one) pays nothing for it, and written back only if the build
changed it. Entries the last build of a root did not look at are dropped when it is
written (a deleted or renamed file does not stay forever), and whole tables are dropped
oldest first (by last use) beyond a count, a total size or an age.

Tables are marshal files: a warm rebuild of a 20,000-file context loads its table in a
few ms (JSON took 35). A table that does not load is empty, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import threading
import time
from pathlib import Path

from pybuild.errors import UserError

_FORMAT = 1
MAX_TABLES = 64
MAX_BYTES = 256 << 20
MAX_AGE = 30 * 86400.0
_Entry = list[object]  # [size, mtime_ns, ctime_ns, ino, sha256 hex]


def _sig(st: os.stat_result) -> list[object]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _Table:
    """One context root's digests: loaded lazily, saved only when changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._data: dict[str, _Entry] | None = None
        self.seen: set[str] = set()  # looked up or recorded by this build
        self.dirty = False

    @property
    def data(self) -> dict[str, _Entry]:
        if self._data is None:
            with self.lock:
                if self._data is None:
                    self._data = self._load()
        return self._data

    def _load(self) -> dict[str, _Entry]:
        if self.path is None:
            return {}
        try:
            doc = marshal.loads(self.path.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            return {}
        with contextlib.suppress(OSError):
            os.utime(self.path)  # last use, for the oldest-first eviction
        if isinstance(doc, dict) and doc.get("v") == _FORMAT and isinstance(
                doc.get("entries"), dict):
            entries: dict[str, _Entry] = doc["entries"]
            return entries
        return {}

    def save(self) -> bool:
        """Write the table if this build changed it; whether it did."""
        data = self._data
        if self.path is None or data is None:
            return False
        with self.lock:
            if not self.dirty and len(self.seen) >= len(data):
                return False  # nothing new, nothing to drop
            kept = {k: v for k, v in data.items() if k in self.seen}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A private temp name: two builds saving at once must not interleave bytes.
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(marshal.dumps({"v": _FORMAT, "entries": kept}))
            os.replace(tmp, self.path)
            self._data, self.seen, self.dirty = kept, set(kept), False
        return True


class _Shelf:
    """The tables of one pybuild root, by context root."""

    def __init__(self, directory: Path | None, *, legacy: Path | None = None) -> None:
        self.directory = directory
        self.legacy = legacy  # the one big file of earlier versions: never read, removed
        self.tables: dict[str, _Table] = {}
        self.lock = threading.Lock()

    def table(self, root: str) -> _Table:
        with self.lock:
            table = self.tables.get(root)
            if table is None:
                table = self.tables[root] = _Table(self._file_for(root))
            return table

    def _file_for(self, root: str) -> Path | None:
        if self.directory is None or not root:
            return None
        try:
            st = os.stat(root)
        except OSError:
            return None
        key = hashlib.sha256(f"{root}\0{st.st_dev}\0{st.st_ino}".encode(
            "utf-8", "surrogateescape")).hexdigest()[:32]
        return self.directory / f"{key}.bin"

    def save(self) -> None:
        written = [table.save() for table in list(self.tables.values())]
        if any(written) and self.directory is not None:
            evict(self.directory)
            if self.legacy is not None:
                with contextlib.suppress(OSError):
                    self.legacy.unlink()
                self.legacy = None


def evict(directory: Path, *, max_tables: int = MAX_TABLES, max_bytes: int = MAX_BYTES,
          max_age: float = MAX_AGE, now: float | None = None) -> list[Path]:
    """Drop whole tables, oldest use first, beyond `max_tables`, `max_bytes` or
    `max_age`; returns the files removed."""
    now = time.time() if now is None else now
    tables: list[tuple[float, int, Path]] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith(".bin"):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    tables.append((st.st_mtime, st.st_size, Path(entry.path)))
    tables.sort(reverse=True)  # most recently used first
    removed: list[Path] = []
    total = 0
    for i, (used, size, path) in enumerate(tables):
        total += size
        over = i >= max_tables or total > max_bytes
        if (over and i > 0) or now - used > max_age:  # the newest table always stays
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


class StatCache:
    """The digests of one context root's files (or, unbound, the way to every root's).

    `StatCache(directory)` opens the tables kept under `directory` (None: in memory
    only); `for_root(root)` gives the cache of one context root; `save()` writes every
    table this build changed and drops old ones. A `.bin` path is the single stat-cache
    file earlier versions kept: it stands for the directory beside it (`statcache/`) and
    is removed at the first save."""

    def __init__(self, directory: Path | None = None, *, _shelf: _Shelf | None = None,
                 _root: str = "") -> None:
        if _shelf is None:
            if directory is not None and directory.suffix == ".bin":
                _shelf = _Shelf(directory.with_suffix(""), legacy=directory)
            else:
                _shelf = _Shelf(directory)
        self._shelf = _shelf
        self.root = _root
        self._table_obj: _Table | None = None

    def for_root(self, root: str) -> StatCache:
        """The cache of the context at `root` (the same tables, saved together)."""
        return StatCache(_shelf=self._shelf, _root=os.path.abspath(root))

    @property
    def _table(self) -> _Table:
        if self._table_obj is None:
            self._table_obj = self._shelf.table(self.root)
        return self._table_obj

    def digest(self, path: str, st: os.stat_result) -> str:
        """The sha256 (hex) of the file at `path` as stat'ed; read only if unknown."""
        # The hot loop of a big context's rebuild: no properties, no helper calls.
        table = self._table_obj or self._table
        data = table._data
        if data is None:
            data = table.data
        hit = data.get(path)  # dict reads are atomic; only writers take the lock
        if (hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns
                and hit[2] == st.st_ctime_ns and hit[3] == st.st_ino):
            table.seen.add(path)
            return str(hit[4])
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}",
                            code="context-unreadable") from None
        hexd = h.hexdigest()
        self.record(path, st, hexd)
        return hexd

    def known(self, path: str, st: os.stat_result) -> bool:
        """Whether the digest of this file (as stat'ed) is cached."""
        table = self._table
        hit = table.data.get(path)
        if hit is not None and hit[:4] == _sig(st):
            table.seen.add(path)
            return True
        return False

    def record(self, path: str, st: os.stat_result, hexdigest: str) -> None:
        """Remember a digest computed by a reader that had the content anyway."""
        table = self._table
        data = table.data
        with table.lock:
            data[path] = [*_sig(st), hexdigest]
            table.seen.add(path)
            table.dirty = True

    def save(self) -> None:
        self._shelf.save()

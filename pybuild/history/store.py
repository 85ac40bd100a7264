"""Build records on disk, and reading them back.

Layout: `ROOT/history/<ref>/` holds
- `lock`: flock'ed (exclusive) by the build for as long as it runs;
- `header.json`: the request, written once, before the record is visible;
- `events.jsonl`: an append-only log, one JSON object a line, each stamped with its time;
- `final.json`: how the build ended, written atomically (rename) when it ends.
A reader tells the state without the writer's help: final.json present = completed,
failed or canceled; absent and the lock held = running; absent and the lock free = the
build was killed (SIGKILL, a crash, a power cut). A record is made under `.tmp-<ref>` and
renamed into place with its lock already held, so a half-made record is never listed.

There is no shared index to corrupt: each build writes only its own directory, and a
listing is a scan. Removal renames a record to `.trash-…` (atomic, so two prunes never
both act on it) after taking its lock, so a running build's record is never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pybuild.errors import NotFoundError, UserError
from pybuild.history.model import (
    SCHEMA_VERSION,
    BuildRecord,
    ErrorInfo,
    Notice,
    RequestSummary,
    Status,
    VertexInfo,
    VertexRecord,
)

HEADER, EVENTS, FINAL, LOCK = "header.json", "events.jsonl", "final.json", "lock"
_REF_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_STALE_TMP_SECONDS = 60.0


def history_root(root: Path) -> Path:
    """Where the records of the pybuild root `root` live."""
    return Path(root) / "history"


def new_ref() -> str:
    """A record id shaped like BuildKit's (25 lowercase letters and digits). (Not the
    `secrets` module: its imports cost a build's start-up more than this does.)"""
    n = int.from_bytes(os.urandom(17), "big")
    out = []
    for _ in range(25):
        n, r = divmod(n, 36)
        out.append(_REF_ALPHABET[r])
    return "".join(out)


def _token() -> str:
    return os.urandom(4).hex()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_token()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- locks -----------------------------------------------------------------------------


def lock_held(record_dir: Path) -> bool:
    """Whether a build still holds the record's lock (it is running)."""
    try:
        fd = os.open(record_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (closing drops a lock taken here)
    return False


@contextlib.contextmanager
def _exclusive(record_dir: Path) -> Iterator[bool]:
    """Takes the record's lock if nobody holds it; yields whether it did."""
    try:
        fd = os.open(record_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def iter_events(record_dir: Path) -> Iterator[dict[str, Any]]:
    """The event log's entries. A torn last line (a write cut by a crash) is skipped."""
    try:
        f = open(record_dir / EVENTS, "rb")  # noqa: SIM115 (closed below, a generator)
    except OSError:
        return
    with f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordHead:
    """What `ls` needs, without replaying the event log of a finished build."""

    ref: str
    created: float
    status: Status
    request: RequestSummary
    completed: float | None
    steps: tuple[int, int, int] | None  # (completed, total, cached); None: replay needed
    path: Path
    last_activity: float  # when the event log was last written

    @property
    def end(self) -> float:
        return self.completed if self.completed is not None else max(self.created,
                                                                       self.last_activity)


def _status(record_dir: Path, final: dict[str, Any] | None) -> Status:
    if final is not None:
        s = final.get("status")
        return s if s in ("completed", "failed", "canceled") else "failed"
    return "running" if lock_held(record_dir) else "killed"


def read_head(record_dir: Path) -> RecordHead | None:
    header = _read_json(record_dir / HEADER)
    if header is None or header.get("schema") != SCHEMA_VERSION:
        return None
    final = _read_json(record_dir / FINAL)
    steps = final.get("steps") if final else None
    try:
        last = os.stat(record_dir / EVENTS).st_mtime
    except OSError:
        last = 0.0
    return RecordHead(
        ref=record_dir.name, created=float(header.get("created", 0.0)),
        status=_status(record_dir, final),
        request=RequestSummary.from_json(header.get("request") or {}),
        completed=float(final["completed"]) if final and "completed" in final else None,
        steps=tuple(int(x) for x in steps[:3]) if isinstance(steps, list)  # type: ignore[arg-type]
        and len(steps) >= 3 else None,
        path=record_dir, last_activity=last)


class _Vertex:
    __slots__ = ("cached", "completed", "digest", "error", "log", "miss", "name", "number",
                 "ran", "started")

    def __init__(self, number: int, digest: str, name: str) -> None:
        self.number, self.digest, self.name = number, digest, name
        self.started: float | None = None
        self.completed: float | None = None
        self.cached = False
        self.ran = False
        self.miss = ""
        self.error = ""
        self.log: list[tuple[float, str]] = []


def load(record_dir: Path) -> BuildRecord:
    """A whole record, its event log replayed."""
    header = _read_json(record_dir / HEADER)
    if header is None:
        raise NotFoundError(f"build record {record_dir.name} is unreadable or gone")
    if header.get("schema") != SCHEMA_VERSION:
        raise UserError(f"build record {record_dir.name} has an unknown format "
                        f"(schema {header.get('schema')!r})")
    final = _read_json(record_dir / FINAL)
    vertices: dict[str, _Vertex] = {}
    described: dict[str, VertexInfo] = {}
    notices: list[Notice] = []
    last = None
    clipped: set[str] = set()

    def vertex(entry: dict[str, Any]) -> _Vertex:
        digest = str(entry.get("d", ""))
        v = vertices.get(digest)
        if v is None:
            v = vertices[digest] = _Vertex(len(vertices) + 1, digest, str(entry.get("n", "")))
        elif entry.get("n") and not v.name:
            v.name = str(entry["n"])
        return v

    for entry in iter_events(record_dir):
        t = entry.get("t")
        t = float(t) if isinstance(t, int | float) else None
        if t is not None:
            last = t
        match entry.get("e"):
            case "describe":
                for raw in entry.get("v") or ():
                    with contextlib.suppress(KeyError, TypeError, ValueError):
                        info = VertexInfo.from_json(raw)
                        described.setdefault(info.digest, info)
            case "cached":
                v = vertex(entry)
                if v.started is None:
                    v.started = t
                v.completed = t if v.completed is None else max(v.completed, t or 0.0)
                v.cached = not v.ran
            case "miss":
                vertex(entry).miss = str(entry.get("r", ""))
            case "started":
                v = vertex(entry)
                v.ran, v.cached = True, False
                v.started = t if v.started is None else min(v.started, t or v.started)
                if v.completed is not None and t is not None and t > v.completed:
                    v.completed = None  # a second run of the same op (another platform)
            case "log":
                v = vertex(entry)
                v.log.append((t if t is not None else (last or 0.0), str(entry.get("x", ""))))
                if entry.get("clip"):
                    clipped.add(v.digest)
            case "done":
                v = vertex(entry)
                v.completed = t
                if v.started is None and t is not None:
                    v.started = t - float(entry.get("s", 0.0))
            case "failed":
                v = vertex(entry)
                v.error = str(entry.get("x", "")) or "failed"
                v.completed = t
                if v.started is None:
                    v.started = t
            case "notice":
                notices.append(Notice(time=t or 0.0, text=str(entry.get("x", "")),
                                      level=str(entry.get("l", "info"))))
    records = tuple(
        VertexRecord(number=v.number, digest=v.digest, name=v.name, started=v.started,
                     completed=v.completed, cached=v.cached, miss_reason=v.miss,
                     error=v.error, log_chunks=tuple(v.log), log_clipped=v.digest in clipped,
                     info=described.get(v.digest) or described.get(_owner(v.digest)))
        for v in vertices.values())
    error = final.get("error") if final else None
    return BuildRecord(
        ref=record_dir.name, created=float(header.get("created", 0.0)),
        status=_status(record_dir, final),
        request=RequestSummary.from_json(header.get("request") or {}),
        completed=float(final["completed"]) if final and "completed" in final else None,
        last_event=last, vertices=records, notices=tuple(notices),
        warnings=tuple(str(w) for w in (final or {}).get("warnings") or ()),
        error=ErrorInfo.from_json(error) if isinstance(error, dict) else None,
        outputs=tuple((str(k), str(v)) for k, v in ((final or {}).get("outputs") or {}).items()),
        described=tuple(described.values()), pid=int(header.get("pid", 0)),
        log_limit=int(header.get("log_limit", 0)))


def _owner(digest: str) -> str:
    """A synthetic vertex ("context:<op digest>", the context upload of a COPY) belongs to
    the op it was made for."""
    return digest.partition(":")[2] if digest.startswith("context:") else ""


# --- listing and refs -----------------------------------------------------------------


def record_dirs(root: Path) -> list[Path]:
    base = history_root(root)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return [base / n for n in names if not n.startswith(".") and (base / n / HEADER).exists()]


def heads(root: Path) -> list[RecordHead]:
    """Every readable record, newest first."""
    out = [h for d in record_dirs(root) if (h := read_head(d)) is not None]
    out.sort(key=lambda h: (h.created, h.ref), reverse=True)
    return out


def resolve(root: Path, ref: str | None) -> Path:
    """A record's directory from a ref as buildx takes them: empty (the newest), `^N` (N
    records back: `^0` is the newest, `^1` the one before), the id, or a unique prefix."""
    records = heads(root)
    if not ref:
        if not records:
            raise NotFoundError("no build records found")
        return records[0].path
    if ref.startswith("^"):
        try:
            offset = int(ref[1:])
        except ValueError:
            raise UserError(f"invalid offset {ref!r}: use ^N, N a number "
                            "(^0 is the newest build)") from None
        if offset < 0:
            raise UserError(f"invalid offset {ref!r}: N must not be negative")
        if offset >= len(records):
            raise NotFoundError(f"no build found with offset {offset}: there are "
                                f"{len(records)} records")
        return records[offset].path
    matches = [h for h in records if h.ref == ref] or [h for h in records
                                                       if h.ref.startswith(ref)]
    if not matches:
        raise NotFoundError(f'no record found for ref "{ref}"',
                            hint="`pybuild history ls` lists the records")
    if len(matches) > 1:
        raise UserError(f'ref "{ref}" is ambiguous: it starts '
                        f"{', '.join(h.ref for h in matches[:5])}"
                        f"{' and more' if len(matches) > 5 else ''}")
    return matches[0].path


# --- removal ---------------------------------------------------------------------------


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def remove(record_dir: Path) -> int:
    """Removes a finished record; returns the bytes freed. A running build's record is
    refused (its lock is held)."""
    with _exclusive(record_dir) as mine:
        if not mine:
            if not record_dir.exists():
                raise NotFoundError(f"build record {record_dir.name} is gone")
            raise UserError(f"build {record_dir.name} is still running; its record is kept")
        size = _size(record_dir)
        trash = record_dir.with_name(f".trash-{record_dir.name}-{_token()}")
        try:
            os.rename(record_dir, trash)
        except FileNotFoundError:
            raise NotFoundError(f"build record {record_dir.name} is gone") from None
    _rmtree(trash)
    return size


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    removed: int = 0
    bytes_freed: int = 0


def prune_records(root: Path, *, until: float | None = None, keep: int | None = None,
                  everything: bool = False, now: float | None = None) -> PruneReport:
    """Removes finished records: all (`everything`), those that ended more than `until`
    seconds ago, and the oldest beyond the newest `keep`. Running builds' records stay
    (and count toward `keep`). Leftovers of killed writers and removers go too."""
    now = time.time() if now is None else now
    removed = freed = 0
    records = heads(root)
    for i, h in enumerate(records):
        ended = h.end
        doomed = (everything or (until is not None and now - ended > until)
                  or (keep is not None and i >= keep))
        if doomed and h.status != "running":
            with contextlib.suppress(UserError):
                freed += remove(h.path)
                removed += 1
    freed += _clean_leftovers(root, now)
    return PruneReport(removed=removed, bytes_freed=freed)


def trim(root: Path, *, keep: int | None, max_age: float | None,
         now: float | None = None) -> PruneReport:
    """What a starting build does to keep the history bounded: usually a directory listing
    and a stat per record (no record is read); a full prune only when something is due."""
    now = time.time() if now is None else now
    base = history_root(root)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return PruneReport()
    due = any(n.startswith(".") for n in names)
    records = [n for n in names if not n.startswith(".")]
    if keep is not None and len(records) > keep:
        due = True
    if not due and max_age is not None:
        for n in records:
            try:
                # A record's directory is last changed when its final state is written.
                if now - os.stat(base / n).st_mtime > max_age:
                    due = True
                    break
            except OSError:
                continue
    if not due:
        return PruneReport()
    return prune_records(root, keep=keep, until=max_age, now=now)


def _clean_leftovers(root: Path, now: float) -> int:
    base = history_root(root)
    freed = 0
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return 0
    for name in names:
        path = base / name
        if name.startswith(".trash-"):
            freed += _size(path)
            _rmtree(path)
        elif name.startswith(".tmp-"):
            try:
                young = now - path.stat().st_mtime < _STALE_TMP_SECONDS
            except OSError:
                continue
            if young or lock_held(path):
                continue
            freed += _size(path)
            _rmtree(path)
        elif not name.startswith(".") and path.is_dir() and not (path / HEADER).exists():
            # A directory without a header is no record (one came from a broken import).
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_TMP_SECONDS and not lock_held(path):
                    freed += _size(path)
                    _rmtree(path)
    return freed

"""What `pybuild prune` removes besides records and blobs: cache mounts (`RUN
--mount=type=cache`) and downloaded sources (`ADD <url>`, `ADD <git>`).

As with BuildKit's `prune --all`, everything not in use goes with `--all`; with
`--filter until=D`, what was not used for D. "In use" is the lock a build holds on each
(flock, so it holds across processes): a directory whose lock cannot be taken at once is
left alone. Its last use is the lock file's mtime, which a build touches when it uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Claimed:
    """A stale directory whose lock this process holds until `release`."""

    path: Path
    lock_path: Path
    lock_fd: int
    is_cache_mount: bool


def _lock_now(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _last_use(path: Path, lock: Path) -> float:
    times = []
    for p in (path, lock):
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    return max(times, default=0.0)


def _candidates(cache_mounts: Path, sources: Path) -> list[tuple[Path, Path, bool]]:
    out: list[tuple[Path, Path, bool]] = []
    if cache_mounts.is_dir():
        for entry in cache_mounts.iterdir():
            if entry.suffix == ".lock" or ".new-" in entry.name or not entry.is_dir():
                continue
            out.append((entry, entry.with_name(entry.name + ".lock"), True))
    for kind in ("http", "git"):
        base = sources / kind
        if base.is_dir():
            out.extend((entry, entry / "lock", False) for entry in base.iterdir()
                       if entry.is_dir())
    return out


def claim_stale(cache_mounts: Path, sources: Path, *, everything: bool,
                until: float | None, now: float | None = None) -> list[Claimed]:
    """Lock and return the directories to remove (none unless `everything` or `until`)."""
    if not everything and until is None:
        return []
    now = time.time() if now is None else now
    claimed: list[Claimed] = []
    for path, lock, is_mount in _candidates(cache_mounts, sources):
        if not everything and now - _last_use(path, lock) <= (until or 0.0):
            continue
        fd = _lock_now(lock) if lock.exists() else None
        if lock.exists() and fd is None:
            continue  # a build is using it
        claimed.append(Claimed(path=path, lock_path=lock, lock_fd=-1 if fd is None else fd,
                               is_cache_mount=is_mount))
    return claimed


def release(claimed: list[Claimed]) -> None:
    """After removing the directories: unlock. A cache mount's lock file stays (a few
    bytes): a build already waiting on it must keep sharing it with later builds, which
    would not happen if they opened a new file at the same path."""
    for c in claimed:
        if c.lock_fd >= 0:
            os.close(c.lock_fd)

"""Garbage collection of a root: cache records by policy, then unreachable blobs, unpacked
snapshots nothing needs, and (with --all or until=) cache mounts and downloads.

Always awaited inside the caller's event loop (a build collects after it has tagged its
result, so a GC failure can never lose it).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from pybuild.cache import dirs
from pybuild.cache.artifact import record_layers
from pybuild.cache.prune import select
from pybuild.cache.store import CacheStore
from pybuild.content.gc import (
    DEFAULT_KEEP_STORAGE,
    GRACE_SECONDS,
    blobs_size,
    image_roots,
    sweep,
)
from pybuild.content.walk import reachable
from pybuild.root import Root

__all__ = ["DEFAULT_KEEP_STORAGE", "DiskUsageRow", "PrunePolicy", "PruneReport", "auto_gc",
           "disk_usage", "prune"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrunePolicy:
    """What to drop. The default drops only what nothing references (and is older than
    `grace` seconds: a running build may not have recorded it yet)."""

    everything: bool = False  # every cache record, cache mount and download
    until: float | None = None  # seconds: what was not used for longer
    keep_storage: int | None = None  # bytes: oldest records first, until under this
    # BuildKit's GC policy (`buildx prune --max-used-space/--reserved-space/
    # --min-free-space`), combined as its `calculateKeepBytes` does; bytes.
    max_used_space: int | None = None  # the store may use at most this
    reserved_space: int | None = None  # never prune the store below this
    min_free_space: int | None = None  # prune until the file system has this free
    grace: float = GRACE_SECONDS

    @property
    def explicit(self) -> bool:
        return (self.everything or self.until is not None or self.keep_storage is not None
                or self.max_used_space is not None or self.reserved_space is not None
                or self.min_free_space is not None)

    def keep_bytes(self, total: int, free: int) -> int | None:
        """The size to prune the store down to (None: no size limit). `total`: what the
        store holds now; `free`: the free bytes of its file system. As BuildKit: at most
        `max_used_space`, less what `min_free_space` still lacks, never below
        `reserved_space`; `keep_storage` alone (buildx's deprecated `--keep-storage`, a
        synonym of `--reserved-space`) prunes down to it."""
        max_used, reserved, min_free = (self.max_used_space or 0,
                                        max(self.reserved_space or 0, self.keep_storage or 0),
                                        self.min_free_space or 0)
        if not (max_used or reserved or min_free):
            return None
        keep = max_used
        excess = min_free - free
        if min_free and excess > 0:
            keep = total - excess if keep == 0 else min(keep, total - excess)
        elif min_free and keep == 0:
            keep = total  # enough is free: nothing needs to go
        return max(keep, reserved)


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    records_removed: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    snapshots_removed: int = 0
    dirs_removed: int = 0  # cache mounts and downloaded sources


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskUsageRow:
    kind: str  # "image" | "cache"
    id: str
    description: str
    size: int
    last_used: str


async def prune(root: Root, policy: PrunePolicy = PrunePolicy()) -> PruneReport:
    store = root.content
    images = image_roots(store, (rec.descriptor for rec in root.images.list()))
    used = sum(store.size(d) for d in images.blobs if store.has(d))
    # (the store's size and the free space matter only for min_free_space)
    sized = policy.min_free_space is not None
    keep_storage = policy.keep_bytes(blobs_size(store) if sized else 0,
                                     _free_bytes(root) if sized else 0)
    cache = CacheStore(root.cache_db)
    try:
        chosen = select(cache.all(), keep=images.blobs, used=used,
                        everything=policy.everything, until=policy.until,
                        keep_storage=keep_storage)
        cache.delete(list(chosen.removed))
    finally:
        cache.close()
    swept = sweep(store, chosen.kept_blobs, grace=policy.grace, explicit=policy.explicit)
    live = {d.hex[:24] for d in images.diff_ids | chosen.kept_diff_ids}
    snapshots = root.snapshots
    dead = ([str(p) for p in snapshots.iterdir()
             if p.name not in live and not p.name.startswith(".")]
            if snapshots.is_dir() else [])
    claimed = dirs.claim_stale(root.cache_mounts, root.cache_dir,
                               everything=policy.everything, until=policy.until)
    removed_dirs = 0
    try:
        for c in claimed:
            if not c.is_cache_mount:  # written by pybuild itself, as the invoking user
                shutil.rmtree(c.path, ignore_errors=True)
                removed_dirs += 1
        mounts = [str(c.path) for c in claimed if c.is_cache_mount]
        if (dead or mounts) and await _remove_in_namespace(root, [*dead, *mounts]):
            removed_dirs += len(mounts)
        else:
            dead = []
    finally:
        dirs.release(claimed)
    if policy.explicit:
        from pybuild.history import prune_records

        prune_records(root.path, until=policy.until, everything=policy.everything)
    return PruneReport(records_removed=len(chosen.removed), blobs_removed=swept.blobs_removed,
                       bytes_freed=swept.bytes_freed, snapshots_removed=len(dead),
                       dirs_removed=removed_dirs)


def _free_bytes(root: Root) -> int:
    import os

    st = os.statvfs(root.path)
    return st.f_bavail * st.f_frsize


async def _remove_in_namespace(root: Root, paths: list[str]) -> bool:
    """Snapshots and cache mounts belong to the build namespace's ids: removed from inside
    it, by a sandbox daemon. False when the root's sandbox was made under another id map
    (it is retired by the next build instead)."""
    from pybuild.builder.executor import idmap as idmap_mod
    from pybuild.builder.executor.rpc import SandboxClient

    idmap = idmap_mod.detect()
    marker = root.sandbox / "idmap"
    if not marker.is_file() or marker.read_text() != idmap.key:
        return False
    async with SandboxClient(idmap) as sb:
        await sb.remove(paths)
    return True


async def auto_gc(root: Root, limit: int = DEFAULT_KEEP_STORAGE) -> PruneReport | None:
    """After a build: bring the content store under `limit` bytes (least recently used
    cache first); None when it already is."""
    if blobs_size(root.content) <= limit:
        return None
    return await prune(root, PrunePolicy(keep_storage=limit))


def disk_usage(root: Root) -> list[DiskUsageRow]:
    """What the store and the cache hold: a row per image and per cache record."""
    store = root.content
    rows: list[DiskUsageRow] = []
    for rec in root.images.list():
        size = sum(store.size(d) for d in reachable(store, [rec.descriptor]) if store.has(d))
        rows.append(DiskUsageRow(kind="image", id=str(rec.descriptor.digest)[:19],
                                 description=rec.name, size=size, last_used=rec.created))
    cache = CacheStore(root.cache_db)
    try:
        for r in cache.all():
            layers = record_layers(r.result)
            rows.append(DiskUsageRow(
                kind="cache", id=r.cache_key[7:19], description=r.description,
                size=int(layers[-1]["size"]) if layers else 0,
                last_used=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.last_used))))
    finally:
        cache.close()
    return rows

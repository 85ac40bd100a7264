"""Garbage collection: keep what images and (recently used) cache records reach.

Policy (also applied automatically after each build): cache records are dropped oldest
first (by last use) while the store is over `keep_storage` bytes or they are older than
`until`; then every blob no image and no remaining record reaches is deleted. Blobs written
in the last hour are spared when nothing was asked explicitly, since a concurrent build may
not have recorded them yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pybuild.content.walk import reachable
from pybuild.digest import Digest

GRACE_SECONDS = 3600.0
DEFAULT_KEEP_STORAGE = 20 * 1000**3  # 20 GB, like BuildKit's default GC cap on big disks


@dataclass(frozen=True, slots=True)
class PruneReport:
    blobs_removed: int
    bytes_freed: int
    records_removed: int
    live_diff_ids: frozenset[str]
    dirs_removed: int = 0  # cache mounts and downloaded sources (see cache/dirs.py)


def _record_layers(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in result.get("layers", []) if x]


def collect(stores: Any, *, drop_cache: bool = False, until: float | None = None,
            keep_storage: int | None = None, grace: float = GRACE_SECONDS) -> PruneReport:
    from pybuild.cache.store import CacheStore
    from pybuild.content.walk import platforms_of, read_config, read_manifest

    now = time.time()
    images = [rec.descriptor for rec in stores.images.list()]
    keep = reachable(stores.content, images)
    live_diff_ids: set[str] = set()
    for desc in images:
        try:
            for manifest_desc, _ in platforms_of(stores.content, desc):
                config = read_config(stores.content, read_manifest(stores.content,
                                                                   manifest_desc))
                live_diff_ids.update(str(d) for d in config.diff_ids)
        except Exception:  # a broken image must not stop GC of everything else
            continue
    cache = CacheStore(stores.roots.cache_db)
    removed_records: list[str] = []
    try:
        records = cache.all()  # newest first
        budget = keep_storage if keep_storage is not None else None
        used = sum(stores.content.size(d) for d in keep if stores.content.has(d))
        for rec in records:
            layers = _record_layers(rec.result)
            new = [Digest(x["digest"]) for x in layers if Digest(x["digest"]) not in keep]
            size = sum(int(x["size"]) for x in layers if Digest(x["digest"]) in new)
            too_old = until is not None and now - rec.last_used > until
            over = budget is not None and used + size > budget
            if drop_cache or too_old or over:
                removed_records.append(rec.cache_key)
                continue
            used += size
            keep.update(new)
            live_diff_ids.update(str(x["diff_id"]) for x in layers)
        cache.delete(removed_records)
    finally:
        cache.close()
    explicit = drop_cache or until is not None or keep_storage is not None
    doomed = []
    for d in stores.content.digests():
        if d in keep:
            continue
        try:
            age = now - stores.content.blob_path(d).stat().st_mtime
        except FileNotFoundError:
            continue
        if age < grace and not explicit:
            continue
        doomed.append(d)
    freed = stores.content.delete(doomed)
    stores.content.clean_ingest()
    return PruneReport(blobs_removed=len(doomed), bytes_freed=freed,
                       records_removed=len(removed_records),
                       live_diff_ids=frozenset(live_diff_ids))


def disk_usage(stores: Any) -> list[dict[str, Any]]:
    """What the cache and store hold: one row per cache record, plus images."""
    from pybuild.cache.store import CacheStore

    rows: list[dict[str, Any]] = []
    for rec in stores.images.list():
        rows.append({"kind": "image", "id": str(rec.descriptor.digest)[:19],
                     "description": rec.name, "size": sum(
                         stores.content.size(d) for d in reachable(stores.content,
                                                                   [rec.descriptor])
                         if stores.content.has(d)),
                     "last_used": rec.created})
    cache = CacheStore(stores.roots.cache_db)
    try:
        for r in cache.all():
            layers = _record_layers(r.result)
            size = int(layers[-1]["size"]) if layers else 0
            rows.append({"kind": "cache", "id": r.cache_key[7:19], "description":
                         r.description, "size": size,
                         "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(r.last_used))})
    finally:
        cache.close()
    return rows

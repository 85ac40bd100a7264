"""Garbage collection of the content store: keep what images and cache records reach."""

from __future__ import annotations

import time
from typing import Any

from pybuild.content.walk import reachable
from pybuild.digest import Digest

GRACE_SECONDS = 3600.0  # blobs younger than this may belong to a build still running


def collect(stores: Any, *, drop_cache: bool = False) -> tuple[int, int]:
    """Delete unreachable blobs; return (bytes freed, blobs removed)."""
    from pybuild.cache.store import CacheStore

    roots = [rec.descriptor for rec in stores.images.list()]
    keep = reachable(stores.content, roots)
    cache = CacheStore(stores.roots.cache_db)
    try:
        if drop_cache:
            cache.delete([r.cache_key for r in cache.all()])
        for rec in cache.all():
            for layer in rec.result.get("layers", []):
                if layer:
                    keep.add(Digest(layer["digest"]))
    finally:
        cache.close()
    now = time.time()
    doomed = []
    for d in stores.content.digests():
        if d in keep:
            continue
        try:
            if now - stores.content.blob_path(d).stat().st_mtime < GRACE_SECONDS and not drop_cache:
                continue
        except FileNotFoundError:
            continue
        doomed.append(d)
    freed = stores.content.delete(doomed)
    stores.content.clean_ingest()
    return freed, len(doomed)

"""Sweep of the content store: every blob outside a given keep set goes.

What to keep is decided above (`pybuild.gc`: images, then cache records by policy); this
module only knows blobs. Blobs written within `grace` seconds are spared unless the
caller says the sweep was asked for explicitly, since a concurrent build may not have
recorded them yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, reachable, read_config, read_manifest
from pybuild.digest import Digest
from pybuild.errors import PybuildError
from pybuild.oci.descriptor import Descriptor

GRACE_SECONDS = 3600.0
DEFAULT_KEEP_STORAGE = 20 * 1000**3  # 20 GB, like BuildKit's default GC cap on big disks


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRoots:
    """What the named images reach: every blob, and the diff_ids of their layers."""

    blobs: frozenset[Digest]
    diff_ids: frozenset[Digest]


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepReport:
    blobs_removed: int
    bytes_freed: int


def image_roots(store: ContentStore, images: Iterable[Descriptor]) -> ImageRoots:
    descs = list(images)
    blobs = reachable(store, descs)
    diff_ids: set[Digest] = set()
    for desc in descs:
        try:
            for manifest_desc, _ in platforms_of(store, desc):
                config = read_config(store, read_manifest(store, manifest_desc))
                diff_ids.update(config.diff_ids)
        except (PybuildError, OSError, ValueError):
            continue  # a broken image must not stop the GC of everything else
    return ImageRoots(blobs=frozenset(blobs), diff_ids=frozenset(diff_ids))


def sweep(store: ContentStore, keep: frozenset[Digest] | set[Digest], *,
          grace: float = GRACE_SECONDS, explicit: bool = False) -> SweepReport:
    now = time.time()
    doomed = []
    for d in store.digests():
        if d in keep:
            continue
        try:
            age = now - store.blob_path(d).stat().st_mtime
        except FileNotFoundError:
            continue
        if age < grace and not explicit:
            continue
        doomed.append(d)
    freed = store.delete(doomed)
    store.clean_ingest()
    return SweepReport(blobs_removed=len(doomed), bytes_freed=freed)


def blobs_size(store: ContentStore) -> int:
    """What the content store's blobs hold, in bytes (apparent sizes)."""
    return store.usage().blobs

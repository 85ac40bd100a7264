"""Which cache records a prune drops: oldest use first, by age and by a storage budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pybuild.cache.artifact import record_layers
from pybuild.cache.store import CacheRecord
from pybuild.digest import Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    removed: tuple[str, ...]  # cache keys to delete
    kept_blobs: frozenset[Digest]  # the layers of the records that stay
    kept_diff_ids: frozenset[Digest]


def select(records: Iterable[CacheRecord], *, keep: frozenset[Digest], used: int,
           everything: bool = False, until: float | None = None,
           keep_storage: int | None = None, now: float | None = None,
           size_of: Callable[[dict[str, Any]], int] | None = None) -> Selection:
    """Walk `records` newest use first: a record goes if everything goes, if it was last
    used more than `until` seconds ago, or if keeping its new layers would take the store
    (`used` bytes so far, for what `keep` holds) over `keep_storage`."""
    now = time.time() if now is None else now
    size = size_of or (lambda layer: int(layer["size"]))
    kept = set(keep)
    diff_ids: set[Digest] = set()
    removed: list[str] = []
    for rec in sorted(records, key=lambda r: -r.last_used):
        layers = record_layers(rec.result)
        new = [x for x in layers if Digest(x["digest"]) not in kept]
        grow = sum(size(x) for x in new)
        too_old = until is not None and now - rec.last_used > until
        over = keep_storage is not None and used + grow > keep_storage
        if everything or too_old or over:
            removed.append(rec.cache_key)
            continue
        used += grow
        kept.update(Digest(x["digest"]) for x in new)
        diff_ids.update(Digest(x["diff_id"]) for x in layers)
    return Selection(removed=tuple(removed), kept_blobs=frozenset(kept),
                     kept_diff_ids=frozenset(diff_ids))

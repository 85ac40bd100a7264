"""The format of a root's snapshot dir, and retiring snapshots of an older format.

Snapshots are shared by every image whose config names the same diff_id, so each must
be what its name says. Since format 2 the daemon publishes a snapshot only under the
diff_id it computed while unpacking (`daemon.layers.apply`); snapshots made before were
named by the config's claim alone and are retired once. Retired snapshots are moved to
the sandbox's scratch area as a dead build's dir, which the next sandbox removes from
inside its namespace (their files belong to the namespace's ids).

Light to import: a build calls this before its frontend runs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

FORMAT = "2"
MARKER = "snapshots-format"  # beside the snapshots dir, in the sandbox dir


def is_current(marker: Path) -> bool:
    try:
        return marker.read_text().strip() == FORMAT
    except OSError:
        return False


def retire_old(snapshots: Path, scratch: Path, marker: Path) -> Path | None:
    """Move `snapshots` aside (under `scratch`, named as a dead build's dir) unless
    `marker` says it is of the current format, or it holds nothing; returns where it
    went, or None."""
    if is_current(marker):
        return None
    try:
        names = [n for n in os.listdir(snapshots) if not n.startswith(".")]
    except FileNotFoundError:
        return None
    if not names:
        return None
    scratch.mkdir(parents=True, exist_ok=True)
    retired = scratch / f"build-old-snapshots-{uuid.uuid4().hex[:12]}"
    try:
        os.rename(snapshots, retired)
    except FileNotFoundError:  # a concurrent build retired them first
        return None
    return retired


def mark_current(marker: Path) -> None:
    """Record that every snapshot is of the current format."""
    if not is_current(marker):
        tmp = marker.with_name(f"{marker.name}.tmp-{os.getpid()}")
        tmp.write_text(FORMAT + "\n")
        os.replace(tmp, marker)

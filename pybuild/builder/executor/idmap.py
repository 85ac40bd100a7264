"""Which ids the build's user namespace maps, and how the parent writes the maps.

Every build runs its steps in one user namespace ("the sandbox namespace") whose ids
0..size-1 are the ids files and processes see inside images:
- unprivileged user: 0 -> the user, 1..N -> a subordinate range from /etc/subuid (via
  newuidmap/newgidmap); without one, a single-id map with a warning;
- root: 0..65535 -> the subordinate range of "root" in /etc/subuid, else a fixed high
  range, so that a build never runs as host root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.builder.executor.protocol import IdExtent

ROOT_FALLBACK_BASE = 1_000_000_000
FULL_RANGE = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Extent:
    inside: int
    outside: int
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IdMap:
    uid_extents: tuple[Extent, ...]
    gid_extents: tuple[Extent, ...]
    size: int  # ids 0..size-1 exist inside
    via_helpers: bool  # newuidmap/newgidmap must write the maps
    warning: str = ""

    @property
    def key(self) -> str:
        """Identifies the mapping; snapshots made under another mapping are unusable."""
        parts = [f"{e.inside}:{e.outside}:{e.size}" for e in self.uid_extents]
        parts += ["g"] + [f"{e.inside}:{e.outside}:{e.size}" for e in self.gid_extents]
        return ",".join(parts)

    def nested_extents(self) -> tuple[IdExtent, ...]:
        """The container's map, relative to the sandbox namespace: identity, split at 1
        so that each extent fits in one extent of the parent map."""
        from pybuild.builder.executor.protocol import IdExtent  # (builds that run steps)

        if self.size == 1:
            return (IdExtent(container_id=0, host_id=0, size=1),)
        return (IdExtent(container_id=0, host_id=0, size=1),
                IdExtent(container_id=1, host_id=1, size=self.size - 1))


def _subid_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best: tuple[int, int] | None = None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if best is None or count > best[1]:
            best = (start, count)
    return best


def detect() -> IdMap:
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    if uid == 0:
        sub_u = _subid_range("/etc/subuid", user, uid)
        sub_g = _subid_range("/etc/subgid", user, uid)
        ustart = sub_u[0] if sub_u and sub_u[1] >= FULL_RANGE else ROOT_FALLBACK_BASE
        gstart = sub_g[0] if sub_g and sub_g[1] >= FULL_RANGE else ROOT_FALLBACK_BASE
        return IdMap(
            uid_extents=(Extent(inside=0, outside=ustart, size=FULL_RANGE),),
            gid_extents=(Extent(inside=0, outside=gstart, size=FULL_RANGE),),
            size=FULL_RANGE,
            via_helpers=False,
        )
    sub_u = _subid_range("/etc/subuid", user, uid)
    sub_g = _subid_range("/etc/subgid", user, uid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap")
    if sub_u and sub_g and helpers:
        count = min(sub_u[1], sub_g[1], FULL_RANGE - 1)
        return IdMap(
            uid_extents=(Extent(inside=0, outside=uid, size=1),
                         Extent(inside=1, outside=sub_u[0], size=count)),
            gid_extents=(Extent(inside=0, outside=gid, size=1),
                         Extent(inside=1, outside=sub_g[0], size=count)),
            size=count + 1,
            via_helpers=True,
        )
    why = ("newuidmap/newgidmap are not installed (Debian package: uidmap)" if not helpers
           else f"{user} has no range in /etc/subuid and /etc/subgid")
    return IdMap(
        uid_extents=(Extent(inside=0, outside=uid, size=1),),
        gid_extents=(Extent(inside=0, outside=gid, size=1),),
        size=1,
        via_helpers=False,
        warning=(f"{why}: RUN steps get a single-id user namespace, so files owned by "
                 f"other users in images become root-owned and `chown` fails inside RUN. "
                 f"Fix: `sudo usermod --add-subuids 100000-165535 --add-subgids "
                 f"100000-165535 {user}` and `apt-get install uidmap`."),
    )


def write_maps(pid: int, idmap: IdMap) -> None:
    """Write the maps of process `pid`, which has just unshared its user namespace."""
    if idmap.via_helpers:
        for tool, extents in (("newuidmap", idmap.uid_extents), ("newgidmap", idmap.gid_extents)):
            args = [tool, str(pid)]
            for e in extents:
                args += [str(e.inside), str(e.outside), str(e.size)]
            proc = subprocess.run(args, capture_output=True, text=True)
            if proc.returncode != 0:
                raise UserError(f"{tool} failed: {proc.stderr.strip() or proc.returncode}",
                                hint="check /etc/subuid and /etc/subgid for your user")
        return
    if os.geteuid() != 0:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name, extents in (("uid_map", idmap.uid_extents), ("gid_map", idmap.gid_extents)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("".join(f"{e.inside} {e.outside} {e.size}\n" for e in extents))

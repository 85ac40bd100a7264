"""Users and groups of a root filesystem (/etc/passwd, /etc/group), resolved as BuildKit does."""

from __future__ import annotations

import os

from pybuild.errors import UserError


def resolve_in_root(root: str, path: str) -> str:
    """`path` inside `root`, following symlinks without ever leaving `root`."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise UserError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _read_db(root: str, name: str) -> list[list[str]]:
    try:
        with open(resolve_in_root(root, f"/etc/{name}"), encoding="utf-8",
                  errors="replace") as f:
            return [line.split(":") for line in f.read().splitlines() if line and
                    not line.startswith("#")]
    except OSError:
        return []


def _lookup_uid(root: str, user: str) -> tuple[int, int | None]:
    if user.isdigit():
        uid = int(user)
        for row in _read_db(root, "passwd"):
            if len(row) >= 4 and row[2] == user:
                return uid, int(row[3]) if row[3].isdigit() else None
        return uid, None
    for row in _read_db(root, "passwd"):
        if len(row) >= 4 and row[0] == user:
            return int(row[2]), int(row[3]) if row[3].isdigit() else None
    raise UserError(f"unable to find user {user}: no matching entries in passwd file")


def lookup_group(root: str, group: str) -> int:
    if group.isdigit():
        return int(group)
    for row in _read_db(root, "group"):
        if len(row) >= 3 and row[0] == group:
            return int(row[2])
    raise UserError(f"unable to find group {group}: no matching entries in group file")


def resolve_user(root: str, spec: str) -> tuple[int, int, list[int]]:
    """`USER` value -> uid, gid, supplementary gids, as BuildKit's executor (`GetUser`):
    the groups that list the user in /etc/group unless a group is given, and always the
    primary gid (`ensureAdditionalGids`, CVE-2023-25173: testUserAdditionalGids)."""
    if not spec:
        spec = "0"
    user, sep, group = spec.partition(":")
    uid, primary = _lookup_uid(root, user)
    if sep and group:
        gid = lookup_group(root, group)
        return uid, gid, [gid]
    gid = primary if primary is not None else 0
    name = user
    if user.isdigit():
        name = ""  # a uid not in /etc/passwd belongs to no group
        for row in _read_db(root, "passwd"):
            if len(row) >= 3 and row[2] == user:
                name = row[0]
                break
    groups: list[int] = []
    for row in _read_db(root, "group"):
        if name and len(row) >= 4 and name in row[3].split(",") and row[2].isdigit():
            groups.append(int(row[2]))
    return uid, gid, groups if gid in groups else [gid, *groups]


def resolve_chown(root: str, user: str, group: str) -> tuple[int, int, list[str]]:
    """`--chown=user[:group]`: a user alone gives the same numeric value as gid (docs).
    Returns uid, gid and warnings (none so far)."""
    uid, _ = _lookup_uid(root, user)
    gid = lookup_group(root, group) if group else uid
    return uid, gid, []

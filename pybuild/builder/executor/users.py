"""Users and groups of a root filesystem (/etc/passwd, /etc/group), resolved as BuildKit does."""

from __future__ import annotations

from pybuild.context.resolve import resolve_in_root as resolve_in_root  # the one resolver
from pybuild.errors import UserError


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


def _parse_id(value: str) -> int | None:
    """A numeric id as BuildKit's llb.WithUser takes it ("root" is 0), else None."""
    if value == "root":
        return 0
    if value.isascii() and value.isdigit() and int(value) < 1 << 31:
        return int(value)
    return None


def resolve_chown(root: str, user: str, group: str) -> tuple[int, int, list[str]]:
    """`--chown=user[:group]` (and WORKDIR's USER) -> uid, gid and warnings, as BuildKit's
    `readUser` (solver/llbsolver/ops/user_linux.go) resolves it in the destination:
    - a numeric user is uid = gid = that number;
    - a user name takes uid and primary gid from /etc/passwd; an unknown one (or no
      /etc/passwd) gives 0:0 (with a warning here; BuildKit says nothing);
    - a group then replaces the gid; an unknown group name keeps the user's gid.
    An empty user is uid 0 (BuildKit's empty name is id 0); `--chown=app:` reaches here as
    group "0" (the frontend's translation of BuildKit's empty group)."""
    warnings: list[str] = []
    uid = gid = 0
    n = _parse_id(user)
    if n is not None:
        uid = gid = n
    elif user:
        row = next((r for r in _read_db(root, "passwd") if len(r) >= 4 and r[0] == user), None)
        if row is not None and row[2].isdigit() and row[3].isdigit():
            uid, gid = int(row[2]), int(row[3])
        else:
            warnings.append(f"user {user!r} is not in the image's /etc/passwd: owner 0:0 "
                            "is used instead (as BuildKit does)")
    if group:
        n = _parse_id(group)
        if n is not None:
            gid = n
        else:
            grow = next((r for r in _read_db(root, "group") if len(r) >= 3 and r[0] == group),
                        None)
            if grow is not None and grow[2].isdigit():
                gid = int(grow[2])
            else:
                warnings.append(f"group {group!r} is not in the image's /etc/group: gid "
                                f"{gid} is used instead (as BuildKit does)")
    return uid, gid, warnings

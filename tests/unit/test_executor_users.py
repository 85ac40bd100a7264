"""Users, groups and modes in a rootfs, resolved as current BuildKit resolves them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.builder.executor.fileops import apply_action
from pybuild.builder.executor.protocol import CopyFiles, FromLowers
from pybuild.builder.executor.users import resolve_chown, resolve_user
from pybuild.errors import UserError

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
app:x:1000:2000::/home/app:/bin/sh
numbered:x:1234:1234::/:/bin/sh
"""
GROUP = """\
root:x:0:
wheel:x:10:root
appgrp:x:2000:
extra:x:3000:app,other
again:x:2000:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize(("spec", "expected"), [
    ("", (0, 0, [0, 10])),
    ("root", (0, 0, [0, 10])),
    ("app", (1000, 2000, [3000, 2000])),  # listed already: BuildKit keeps the order
    ("app:extra", (1000, 3000, [3000])),
    ("1000:0", (1000, 0, [0])),
    ("4321", (4321, 0, [0])),  # testUserAdditionalGids
    ("numbered", (1234, 1234, [1234])),
])
def test_run_user_has_its_primary_gid_among_its_groups(rootfs: str, spec: str,
                                                       expected: tuple[int, int, list[int]]
                                                       ) -> None:
    assert resolve_user(rootfs, spec) == expected


def test_run_as_an_unknown_user_fails(rootfs: str) -> None:
    with pytest.raises(UserError, match="unable to find user nosuch"):
        resolve_user(rootfs, "nosuch")


@pytest.mark.parametrize(("user", "group", "uid", "gid", "warned"), [
    ("app", "", 1000, 2000, ""),  # the primary gid from /etc/passwd
    ("1000", "", 1000, 1000, ""),  # by id: gid = uid
    ("root", "", 0, 0, ""),
    ("app", "0", 1000, 0, ""),  # `app:` (the frontend's translation)
    ("app", "extra", 1000, 3000, ""),
    ("app", "55", 1000, 55, ""),
    ("", "extra", 0, 3000, ""),  # `:extra`
    ("nosuch", "", 0, 0, "'nosuch'"),
    ("nosuch", "extra", 0, 3000, "'nosuch'"),
    ("app", "nosuch", 1000, 2000, "'nosuch'"),  # an unknown group keeps the user's gid
])
def test_chown_resolves_as_buildkits_read_user(rootfs: str, user: str, group: str,
                                               uid: int, gid: int, warned: str) -> None:
    got_uid, got_gid, warnings = resolve_chown(rootfs, user, group)
    assert (got_uid, got_gid) == (uid, gid)
    assert (warned in warnings[0]) if warned else not warnings


def test_chown_by_name_without_passwd_is_root(tmp_path: Path) -> None:
    uid, gid, warnings = resolve_chown(str(tmp_path), "app", "")
    assert (uid, gid) == (0, 0) and "'app'" in warnings[0]


def test_parents_made_by_a_setuid_chmod_get_permission_bits_only(tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "root"
    src.mkdir()
    root.mkdir()
    (src / "f").write_text("x")
    action = CopyFiles(source=FromLowers(lowers=()), sources=("f",), dest="/p/q/f",
                       chmod="4755")
    assert apply_action(str(root), action, str(src)) == []
    assert oct((root / "p").stat().st_mode & 0o7777) == "0o755"
    assert oct((root / "p" / "q").stat().st_mode & 0o7777) == "0o755"
    assert oct(os.lstat(root / "p" / "q" / "f").st_mode & 0o7777) == "0o4755"

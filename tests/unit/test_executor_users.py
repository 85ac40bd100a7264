"""Users, groups and modes in a rootfs, resolved as current BuildKit resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.builder.executor.users import resolve_user
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

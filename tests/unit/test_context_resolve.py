"""The one symlink-safe resolver (context/resolve.py): a path inside a root never leaves it.

It serves the build context (host side) and image root filesystems in the sandbox (USER
lookups, COPY destinations), so it is attacked here on purpose: `..`, absolute links,
links that climb, loops, long chains, a link that replaces a parent directory after its
children were made, and random trees of hostile links (hypothesis).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.context.resolve import MAX_SYMLINKS, resolve_in_root, resolve_relative
from pybuild.errors import UserError
from tests.tooling import require, require_tool, traversable_dir

REPO = Path(__file__).resolve().parents[2]


def _inside(root: Path, path: str) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + "/")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (r / "usr" / "lib").mkdir(parents=True)
    return r.resolve()


@pytest.mark.parametrize(("path", "expected"), [
    ("/", ""),
    ("", ""),
    (".", ""),
    ("/etc/passwd", "etc/passwd"),
    ("etc/./passwd", "etc/passwd"),
    ("//etc//passwd", "etc/passwd"),
    ("../../../etc/passwd", "etc/passwd"),  # `..` stops at the root
    ("/usr/lib/../../etc", "etc"),
    ("/missing/../etc", "etc"),
    ("/missing/deeper/x", "missing/deeper/x"),  # missing parts are kept as written
])
def test_plain_paths(root: Path, path: str, expected: str) -> None:
    assert resolve_relative(str(root), path) == expected
    assert resolve_in_root(str(root), path) == (str(root / expected) if expected
                                                else str(root))


@pytest.mark.parametrize(("link", "target", "path", "expected"), [
    ("abs", "/etc", "abs/passwd", "etc/passwd"),            # absolute: restarts at root
    ("shadow", "/etc/shadow", "shadow", "etc/shadow"),      # the host's /etc/shadow: no
    ("up", "..", "up/up/etc", "etc"),
    ("climb", "../../../../../..", "climb/etc/passwd", "etc/passwd"),
    ("usr/lib/rel", "../../etc", "usr/lib/rel/passwd", "etc/passwd"),
    ("usr/lib/dotdot", "../lib/../../etc/./passwd", "usr/lib/dotdot", "etc/passwd"),
    ("dangling", "/nowhere/file", "dangling", "nowhere/file"),
    ("selfdir", ".", "selfdir/selfdir/etc", "etc"),
])
def test_links_resolve_inside(root: Path, link: str, target: str, path: str,
                              expected: str) -> None:
    os.symlink(target, root / link)
    assert resolve_relative(str(root), path) == expected
    assert _inside(root, resolve_in_root(str(root), path))


def test_a_link_replacing_a_parent_after_its_children(root: Path) -> None:
    # A layer makes d/ and d/sub/, then replaces d by a link out (the F1 shape): resolving
    # d/sub afterwards follows the link, inside the root.
    (root / "d" / "sub").mkdir(parents=True)
    for d in (root / "d" / "sub", root / "d"):
        d.rmdir()
    os.symlink("/", root / "d")
    assert resolve_relative(str(root), "d/sub") == "sub"
    os.unlink(root / "d")
    os.symlink("../../../../tmp", root / "d")
    assert resolve_relative(str(root), "/d/sub/x") == "tmp/sub/x"


def test_a_file_as_a_parent_is_kept_as_written(root: Path) -> None:
    assert resolve_relative(str(root), "etc/passwd/x") == "etc/passwd/x"


@pytest.mark.parametrize("kind", ["self", "pair", "via-abs"])
def test_loops_are_an_error(root: Path, kind: str) -> None:
    if kind == "self":
        os.symlink("loop", root / "loop")
    elif kind == "pair":
        os.symlink("b", root / "a")
        os.symlink("a", root / "b")
        os.symlink("a", root / "loop")
    else:
        os.symlink("/loop/x", root / "loop")
    with pytest.raises(UserError, match="too many levels of symbolic links") as info:
        resolve_in_root(str(root), "/loop/etc")
    assert info.value.code == "symlink-loop"


def test_chains_up_to_the_limit_resolve(root: Path) -> None:
    # l0 -> l1 -> ... -> l{n-1} -> etc
    def chain(prefix: str, n: int) -> None:
        for i in range(n):
            nxt = f"{prefix}{i + 1}" if i + 1 < n else "etc"
            os.symlink(nxt, root / f"{prefix}{i}")

    chain("ok", MAX_SYMLINKS)
    assert resolve_relative(str(root), "ok0/passwd") == "etc/passwd"
    chain("long", MAX_SYMLINKS + 1)
    with pytest.raises(UserError, match="too many levels"):
        resolve_relative(str(root), "long0/passwd")


def test_nul_bytes_are_refused(root: Path) -> None:
    with pytest.raises(UserError, match="NUL"):
        resolve_in_root(str(root), "etc\0/passwd")


def test_unreadable_dirs_are_taken_as_written_as_another_user() -> None:
    # As the unprivileged test user, a 0700 root-owned directory cannot be looked into: its
    # contents count as missing, and the answer still stays inside.
    require("root")
    runuser = require_tool("runuser")
    base = traversable_dir("pybuild-resolve-")
    try:
        (base / "secret" / "inner").mkdir(parents=True)
        (base / "secret").chmod(0o700)
        os.symlink("secret/inner", base / "link")
        os.symlink("../../..", base / "secret" / "inner" / "up")
        os.symlink("/secret", base / "abs")
        code = ("import sys; from pybuild.context.resolve import resolve_relative as r; "
                "print(r(sys.argv[1], 'link/up/etc'), r(sys.argv[1], 'abs/inner/up/x'))")
        out = subprocess.run([runuser, "-u", "pbtester", "--", sys.executable, "-c", code,
                              str(base)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        # link -> secret/inner is followed (base is readable); inner/up is not visible
        assert out.stdout.split() == ["secret/inner/up/etc", "secret/inner/up/x"]
        # root sees through: the same paths climb back to the root, never out
        assert resolve_relative(str(base), "link/up/etc") == "etc"
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- hostile random trees ---------------------------------------------------------------


def _make_link(root: Path, parts: list[str], target: str) -> None:
    """A link at root/parts, its parent dirs made without ever following a link (the
    test itself must not write outside `root`)."""
    cur = root
    for part in parts[:-1]:
        cur = cur / part
        if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
            return
        if not cur.exists():
            cur.mkdir()
    if not os.path.lexists(cur / parts[-1]):
        os.symlink(target, cur / parts[-1])


_NAMES = ["a", "b", "c", "..", "."]
_TARGETS = st.sampled_from(["/", "..", "../..", "../../../..", "/etc", "/a", "a", "b/c",
                            "../a/..", "/../..", ".", "/proc/self/root", "../b"])
_PATHS = st.lists(st.sampled_from(_NAMES), min_size=0, max_size=8).map("/".join)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.lists(st.tuples(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1,
                                         max_size=3), _TARGETS), max_size=8),
       path=_PATHS, absolute=st.booleans())
def test_random_hostile_trees_never_leave_the_root(tmp_path: Path,
                                                   links: list[tuple[list[str], str]],
                                                   path: str, absolute: bool) -> None:
    root = Path(tempfile.mkdtemp(dir=os.path.realpath(tmp_path)))
    (root / "etc").mkdir()
    for parts, target in links:
        _make_link(root, parts, target)
    try:
        got = resolve_in_root(str(root), ("/" if absolute else "") + path)
    except UserError as exc:
        assert exc.code == "symlink-loop"
        return
    assert _inside(root, got), (links, path, got)

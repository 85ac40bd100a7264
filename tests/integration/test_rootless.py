"""Rootless: an unprivileged user builds with a full subordinate id range; root builds
still run every step in a user namespace."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import rootless_root, run_pybuild, tool, umoci_rootfs

USER = "pbtester"

DOCKERFILE = """\
FROM busybox
RUN id -u > /uid && cat /proc/self/uid_map > /uidmap
RUN mkdir /owned && touch /owned/f && chown -R 1000:1000 /owned
RUN su nobody -s /bin/sh -c 'id -u' > /nobody
RUN cat /proc/1/cmdline | tr '\\0' ' ' > /pid1 && ls /proc | grep -c '^[0-9]' > /nprocs
COPY data/ /data/
RUN cat /data/hello > /copied && ls /data/many | wc -l > /many
"""


def _require_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"test user {USER} is missing: scripts/setup.sh creates it")
        pytest.skip(f"test user {USER} does not exist (run scripts/setup.sh as root)")


def test_unprivileged_user_builds_with_full_id_range(base_layout: Path, tmp_path: Path) -> None:
    _require_user()
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the test user")
    tool("newuidmap")
    work = Path("/tmp") / f"pybuild-rootless-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    try:
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        # A context COPY big enough to be written straight into a layer before its key,
        # then unpacked for the RUN after it: as the user, through its namespace.
        (ctx / "data" / "many").mkdir(parents=True)
        (ctx / "data" / "hello").write_text("hello from the context\n")
        for i in range(80):
            (ctx / "data" / "many" / f"f{i}").write_text(str(i))
        subprocess.run(["chown", "-R", USER, str(ctx)], check=True)
        root = rootless_root(work, USER, base_layout)
        r = run_pybuild(root, "build", "-t", "rootless:1", "--progress", "plain", str(ctx),
                        user=USER)
        assert r.code == 0, r.err
        assert "single-id" not in r.err  # the full subordinate range was used
        # Everything the user's build wrote belongs to the user or its sub-ids, none to root.
        for p in root.rglob("*"):
            st = p.lstat()
            assert st.st_uid != 0, f"{p} is owned by host root"
        files = umoci_rootfs(root, "rootless:1", tmp_path)
        assert (files / "uid").read_text().strip() == "0"
        uidmap = (files / "uidmap").read_text().split()
        assert uidmap[:3] == ["0", "0", "1"]  # container root = the sandbox's root
        assert (files / "owned" / "f").stat().st_uid == 1000
        assert (files / "owned").stat().st_gid == 1000
        assert (files / "nobody").read_text().strip() == "65534"
        assert int((files / "nprocs").read_text()) <= 3  # no host processes visible
        assert (files / "copied").read_text() == "hello from the context\n"
        assert (files / "many").read_text().strip() == "80"
        assert (files / "data" / "hello").stat().st_uid == 0  # context owners never leak
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def test_root_build_runs_steps_in_a_user_namespace(pybuild, tmp_path: Path,
                                                   shared_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("this test is about builds run by root")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN cat /proc/self/uid_map > /map && touch /made-by-root\n")
    r = pybuild("build", "-t", "rootmap:1", str(ctx))
    assert r.code == 0, r.err
    files = umoci_rootfs(shared_root, "rootmap:1", tmp_path)
    inner = (files / "map").read_text().split()
    assert inner[:3] == ["0", "0", "1"]
    # The sandbox namespace itself maps root elsewhere: its snapshot dirs are not host root's.
    snaps = shared_root / "sandbox" / "snapshots"
    owners = {p.stat().st_uid for p in snaps.iterdir()}
    assert owners and 0 not in owners

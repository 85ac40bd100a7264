"""F8: `-o type=tar|oci|docker,dest=…` never renames over what is not a regular file.

Device nodes are made in a scratch dir (mknod c 1 3: a /dev/null of the test's own, never
the host's), so a regression replaces nothing that matters. As root and as pbtester.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO,
    PybuildRunner,
    rootless_root,
    run_pybuild,
    tool,
    traversable_dir,
)
from tests.tooling import require

DOCKERFILE = "FROM busybox\nCOPY hello.txt /hello.txt\n"


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = traversable_dir("pybuild-dest-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _ctx(parent: Path) -> Path:
    ctx = parent / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def _null_node(path: Path) -> Path:
    require("root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    path.chmod(0o666)
    return path


def _is_null(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def _read_fifo_into(fifo: Path, out: Path) -> threading.Thread:
    reader = threading.Thread(target=lambda: out.write_bytes(fifo.read_bytes()), daemon=True)
    reader.start()
    return reader


@pytest.mark.parametrize("kind", ["tar", "oci", "docker"])
def test_a_device_is_written_in_place(pybuild: PybuildRunner, scratch: Path,
                                      kind: str) -> None:
    node = _null_node(scratch / "dev-null")
    r = pybuild("build", "-o", f"type={kind},dest={node}", str(_ctx(scratch)))
    assert r.code == 0, r.err
    assert _is_null(node)  # still the device, not a regular file holding the archive
    assert sorted(p.name for p in scratch.iterdir()) == ["ctx", "dev-null"]  # no temp left


@pytest.mark.parametrize("kind", ["tar", "docker"])
def test_a_fifo_is_streamed(pybuild: PybuildRunner, scratch: Path, kind: str) -> None:
    fifo = scratch / "fifo"
    os.mkfifo(fifo)
    got = scratch / "got.tar"
    reader = _read_fifo_into(fifo, got)
    r = pybuild("build", "-o", f"type={kind},dest={fifo}", str(_ctx(scratch)))
    reader.join(timeout=60)
    assert r.code == 0, r.err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if kind == "tar":
        with tarfile.open(got) as tar:
            assert tar.extractfile("hello.txt").read() == b"hello\n"  # type: ignore[union-attr]
    else:  # what came through the pipe is a docker archive an independent reader takes
        skopeo = tool("skopeo")
        out = subprocess.run([skopeo, "inspect", "--config", f"docker-archive:{got}"],
                             capture_output=True, text=True, check=True).stdout
        assert '"architecture"' in out


@pytest.mark.parametrize("kind", ["tar", "oci", "docker"])
def test_missing_parent_is_an_error_and_not_created(pybuild: PybuildRunner, scratch: Path,
                                                    kind: str) -> None:
    dest = scratch / "missing" / "deeper" / "out.tar"
    r = pybuild("build", "-o", f"type={kind},dest={dest}", str(_ctx(scratch)))
    assert r.code == 1, r.err
    assert f"directory {dest.parent} does not exist" in r.err
    assert "internal error" not in r.err
    assert not (scratch / "missing").exists()


def test_a_directory_dest_for_an_archive_is_an_error(pybuild: PybuildRunner,
                                                     scratch: Path) -> None:
    r = pybuild("build", "-o", f"type=docker,dest={scratch}", str(_ctx(scratch)))
    assert r.code == 1
    assert f"{scratch} is a directory; expected a path for the docker archive file" in r.err


def test_a_regular_file_is_replaced(pybuild: PybuildRunner, scratch: Path) -> None:
    dest = scratch / "out.tar"
    dest.write_text("old")
    r = pybuild("build", "-o", f"type=tar,dest={dest}", str(_ctx(scratch)))
    assert r.code == 0, r.err
    with tarfile.open(dest) as tar:
        assert "hello.txt" in tar.getnames()


def test_stdout_on_a_terminal_is_refused(shared_root: Path, scratch: Path) -> None:
    leader, follower = os.openpty()
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(shared_root),
                               "build", "-o", "type=tar,dest=-", str(_ctx(scratch))],
                              stdout=follower, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=300)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 1, proc.stderr
    assert "terminal" in proc.stderr and "internal error" not in proc.stderr


def test_rootless_devices_and_fifos(base_layout: Path) -> None:
    require("root")
    try:
        user = pwd.getpwnam("pbtester")
    except KeyError:
        from tests.tooling import missing

        missing("test user pbtester does not exist (run scripts/setup.sh as root)")
    tool("newuidmap")
    work = traversable_dir("pybuild-dest-")
    try:
        ctx = _ctx(work)
        root = rootless_root(work, "pbtester", base_layout)
        node = _null_node(work / "dev-null")
        fifo = work / "fifo"
        os.mkfifo(fifo)
        os.chown(fifo, user.pw_uid, user.pw_gid)
        r = run_pybuild(root, "build", "-o", f"type=tar,dest={node}", str(ctx),
                        user="pbtester")
        assert r.code == 0, r.err
        assert _is_null(node)
        got = work / "got.tar"
        reader = _read_fifo_into(fifo, got)
        r = run_pybuild(root, "build", "-o", f"type=oci,dest={fifo}", str(ctx),
                        user="pbtester")
        reader.join(timeout=60)
        assert r.code == 0, r.err
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        with tarfile.open(got) as tar:
            assert "index.json" in tar.getnames()
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""What a RUN step's layer holds, checked by reading the layer tar and by umoci: deletions
are whiteouts, replaced dirs opaque, owners/hard links/file capabilities/fifos survive,
and unchanged files are absent. As root and as the unprivileged test user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import (
    rootless_root,
    run_pybuild,
    tool,
    traversable_dir,
    umoci_rootfs,
)
from tests.integration.test_executor_support import image_layers, write_context

USER = "pbtester"
CAP_NET_RAW_V2 = bytes.fromhex("0100000200200000000000000000000000000000")

DOCKERFILE = """\
FROM busybox
RUN mkdir -p /data/keep /data/gone && echo a > /data/keep/a && echo b > /data/gone/b && \\
    echo f > /data/file && echo x > /data/untouched && mkdir /data/replaced && \\
    echo old > /data/replaced/old
RUN rm /data/file && rm -rf /data/gone /data/replaced && mkdir /data/replaced && \\
    echo new > /data/replaced/new && echo c > /c && chown 1000:1000 /c && \\
    echo h > /h1 && ln /h1 /h2 && mkfifo /fifo && \\
    (mknod /dev-node c 1 3 2>/dev/null || echo "mknod: $?" > /mknod-refused)
RUN --mount=type=bind,source=tools,target=/tools \\
    cp /bin/busybox /ping && /tools/ld.so --library-path /tools /tools/setcap cap_net_raw+ep /ping
"""


def _tools(ctx: Path) -> None:
    """Host setcap + its libraries and loader, run through the loader inside the step
    (busybox has no setcap/setfattr; a bind-mounted helper writes security.capability)."""
    setcap = tool("setcap")
    tools = ctx / "tools"
    tools.mkdir()
    shutil.copy(setcap, tools / "setcap")
    out = subprocess.run(["ldd", setcap], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/") and os.path.exists(path):
            name = "ld.so" if "ld-linux" in path else os.path.basename(path)
            shutil.copy(path, tools / name)
    for p in tools.iterdir():
        p.chmod(0o755)


def _check(layers: list[dict], umoci_rootfs: Path | None) -> None:
    step2, step3 = layers[-2], layers[-1]
    names = set(step2)
    assert "data/.wh.file" in names  # deleted base file -> whiteout
    assert "data/.wh.gone" in names
    assert "data/replaced/.wh..wh..opq" in names  # rm -rf + mkdir -> opaque dir
    assert "data/replaced/new" in names
    assert "data/untouched" not in names and "data/keep/a" not in names  # unchanged
    assert step2["c"].info.uid == 1000 and step2["c"].info.gid == 1000
    links = [n for n in ("h1", "h2") if step2[n].info.islnk()]
    assert len(links) == 1  # one entry is a hard link to the other
    assert step2["fifo"].info.isfifo()
    # Device nodes cannot be made in a user namespace (BuildKit rootless alike).
    assert "mknod-refused" in names and "dev-node" not in names
    assert not any(n.startswith(("proc", "sys", "dev/", "etc", "run", "tools")) for n in names)
    ping = step3["ping"].info
    assert ping.pax_headers.get("SCHILY.xattr.security.capability", "").encode(
        "latin-1") == CAP_NET_RAW_V2
    assert set(step3) == {"ping"}
    if umoci_rootfs is not None:
        assert not (umoci_rootfs / "data" / "file").exists()
        assert not (umoci_rootfs / "data" / "replaced" / "old").exists()
        assert (umoci_rootfs / "data" / "replaced" / "new").read_text() == "new\n"
        assert (umoci_rootfs / "data" / "untouched").read_text() == "x\n"
        st1, st2 = (umoci_rootfs / "h1").stat(), (umoci_rootfs / "h2").stat()
        assert st1.st_ino == st2.st_ino
        assert os.getxattr(umoci_rootfs / "ping", "security.capability") == CAP_NET_RAW_V2


def test_layer_contents_as_root(fresh_root: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs as root (the rootless variant is the next test)")
    ctx = write_context(tmp_path / "ctx", DOCKERFILE)
    _tools(ctx)
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "-t", "layers:1", str(ctx))
    assert r.code == 0, r.err
    _check(image_layers(fresh_root, "layers:1", tmp_path),
           umoci_rootfs(fresh_root, "layers:1", tmp_path))


def test_layer_contents_as_unprivileged_user(base_layout: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the test user")
    try:
        pwd.getpwnam(USER)  # the test user must exist
    except KeyError:
        from tests.tooling import missing

        missing(f"test user {USER} does not exist (run scripts/setup.sh as root)")
    tool("newuidmap")
    work = traversable_dir("pybuild-layers-")
    try:
        ctx = write_context(work / "ctx", DOCKERFILE)
        _tools(ctx)
        out = work / "out"
        out.mkdir()
        root = rootless_root(work, USER, base_layout)
        r = run_pybuild(root, "build", "--progress", "plain", "-t", "layers:1", str(ctx),
                        user=USER)
        assert r.code == 0, r.err
        _check(image_layers(root, "layers:1", out, user=USER), None)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)

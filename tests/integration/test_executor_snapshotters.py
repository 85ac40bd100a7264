"""The snapshotter fallbacks (PYBUILD_SNAPSHOTTER=overlay|fuse-overlayfs|copy) give the
same layers; the choice is reported once per build as a notice."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import run_pybuild, tool
from tests.integration.test_executor_support import image_layers, write_context
from tests.tooling import missing

DOCKERFILE = """\
FROM busybox
RUN mkdir -p /d/gone /d/repl && echo 1 > /d/gone/f && echo 2 > /d/repl/old && \\
    echo 3 > /d/rm && echo 4 > /d/same
RUN rm /d/rm && rm -rf /d/gone /d/repl && mkdir /d/repl && echo n > /d/repl/new && \\
    echo h > /h1 && ln /h1 /h2 && chown 1000:1000 /h1 && mkdir -p /w/x
WORKDIR /w/x
COPY f /w/x/f
RUN --mount=type=tmpfs,target=/run/t/u cat f > g
"""


def _usable_fuse() -> None:
    tool("fuse-overlayfs")
    if not os.path.exists("/dev/fuse"):
        missing("/dev/fuse does not exist")
    mode = os.stat("/dev/fuse").st_mode
    if mode & 0o006 != 0o006:
        if os.geteuid() != 0:
            missing("/dev/fuse is not usable by unprivileged users (chmod 0666 /dev/fuse)")
        os.chmod("/dev/fuse", stat.S_IMODE(mode) | 0o666)


def _summary(layers: list[dict]) -> list[list[tuple[str, str, int, int, bytes]]]:
    out = []
    for layer in layers[1:]:
        out.append(sorted((name, e.info.type.decode(), e.info.uid, e.info.mode, e.data)
                          for name, e in layer.items()))
    return out


@pytest.mark.parametrize("snapshotter", ["overlay", "fuse-overlayfs", "copy"])
def test_forced_snapshotter_gives_the_same_layers(snapshotter: str, fresh_root: Path,
                                                  tmp_path: Path) -> None:
    if snapshotter == "fuse-overlayfs":
        _usable_fuse()
    ctx = write_context(tmp_path / "ctx", DOCKERFILE, {"f": "from-context\n"})
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "-t", "snap:1", str(ctx),
                    env={"PYBUILD_SNAPSHOTTER": snapshotter})
    assert r.code == 0, r.err
    assert r.err.count("snapshotter: ") == 1 and f"snapshotter: {snapshotter}" in r.err
    layers = _summary(image_layers(fresh_root, "snap:1", tmp_path))
    step2 = {e[0]: e for e in layers[1]}
    assert "d/.wh.rm" in step2 and "d/.wh.gone" in step2
    assert "d/repl/.wh..wh..opq" in step2 and "d/repl/new" in step2
    assert "d/same" not in step2
    assert step2["h1"][2] == 1000
    assert {step2["h1"][1], step2["h2"][1]} == {"0", "1"}  # a file and a hard link to it
    last = {e[0] for e in layers[-1]}
    assert last == {"w", "w/x", "w/x/g"}  # no /run stub
    if snapshotter != "overlay":
        ref = tmp_path / "ref"
        ref.mkdir()
        r = run_pybuild(fresh_root, "build", "--no-cache", "-t", "snap:ref", str(ctx),
                        env={"PYBUILD_SNAPSHOTTER": "overlay"})
        assert r.code == 0, r.err
        expected = _summary(image_layers(fresh_root, "snap:ref", ref))
        names = [[e[0] for e in layer] for layer in layers]
        assert names == [[e[0] for e in layer] for layer in expected]

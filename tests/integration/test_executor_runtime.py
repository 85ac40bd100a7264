"""OCI runtimes: crun and runc both run steps; the default is probed once per root and
remembered; a runtime that fails at run time is replaced by the other one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import run_pybuild, tool
from tests.integration.test_executor_support import last_layer, write_context

FAKE_RUNTIME = """#!/bin/sh
# A runtime that fails the way a broken runtime does: an error in its --log, exit 1.
log=""
while [ $# -gt 0 ]; do
  case "$1" in --log) log="$2"; shift;; esac
  shift
done
msg='{"level":"error","msg":"fake runtime: cannot set up the container"}'
[ -n "$log" ] && echo "$msg" >> "$log"
echo "fake runtime: cannot set up the container" >&2
exit 1
"""


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_each_runtime_runs_steps(runtime: str, fresh_root: Path, tmp_path: Path) -> None:
    # crun refuses hybrid-cgroup hosts with controllers on cgroup2 unless the sandbox
    # hides them (it does, under a tmpfs): this proves crun works here.
    tool(runtime)
    ctx = write_context(tmp_path / "ctx", "FROM busybox\n"
                        f"RUN echo {runtime} > /which && cat /proc/self/uid_map > /map\n")
    r = run_pybuild(fresh_root, "build", "--runtime", runtime, "--progress", "plain",
                    "-t", f"rt-{runtime}:1", str(ctx))
    assert r.code == 0, r.err
    files = last_layer(fresh_root, f"rt-{runtime}:1", tmp_path)
    assert files["which"].data == f"{runtime}\n".encode()
    # A pinned runtime is not probed or remembered.
    assert not (fresh_root / "sandbox" / "runtime.json").exists()


def _fake_bin(tmp: Path) -> Path:
    fake = tmp / "bin"
    fake.mkdir()
    fake.chmod(0o755)
    script = fake / "crun"
    script.write_text(FAKE_RUNTIME)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return fake


def test_default_runtime_is_probed_once_and_remembered(fresh_root: Path, tmp_path: Path,
                                                       trav: Path) -> None:
    tool("crun")
    tool("runc")
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nRUN echo probed > /p\n")
    r = run_pybuild(fresh_root, "build", "-t", "probe:1", str(ctx))
    assert r.code == 0, r.err
    memo = json.loads((fresh_root / "sandbox" / "runtime.json").read_text())
    assert memo["runtime"] == "crun"  # preferred, and it works here

    # With a crun that cannot run anything, a fresh root probes its way to runc.
    (fresh_root / "sandbox" / "runtime.json").unlink()
    env = {"PATH": f"{_fake_bin(trav)}:{os.environ['PATH']}"}
    ctx2 = write_context(tmp_path / "ctx2", "FROM busybox\nRUN echo probed2 > /p\n")
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "-t", "probe:2", str(ctx2),
                    env=env)
    assert r.code == 0, r.err
    memo = json.loads((fresh_root / "sandbox" / "runtime.json").read_text())
    assert memo["runtime"] == "runc"
    assert "fake runtime" in memo["why"]


def test_runtime_failing_at_run_time_falls_back(fresh_root: Path, tmp_path: Path,
                                                 trav: Path) -> None:
    tool("runc")
    fake = _fake_bin(trav)
    first = write_context(tmp_path / "first", "FROM busybox\nRUN true\n")
    assert run_pybuild(fresh_root, "build", str(first)).code == 0
    # The remembered choice is a crun that breaks at run time (e.g. after an upgrade).
    (fresh_root / "sandbox" / "runtime.json").write_text(
        json.dumps({"runtime": "crun", "path": str(fake / "crun"), "why": "test"}))
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nRUN echo one > /1\nRUN echo two > /2\n")
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "-t", "fb:1", str(ctx), env=env)
    assert r.code == 0, r.err
    assert "retrying with runc" in r.err
    assert r.err.count("retrying with runc") == 1  # the second step went to runc directly
    memo = json.loads((fresh_root / "sandbox" / "runtime.json").read_text())
    assert memo["runtime"] == "runc"
    assert last_layer(fresh_root, "fb:1", tmp_path)["2"].data == b"two\n"


def test_pinned_runtime_does_not_fall_back(fresh_root: Path, tmp_path: Path,
                                            trav: Path) -> None:
    fake = _fake_bin(trav)
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nRUN true\n")
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    r = run_pybuild(fresh_root, "build", "--runtime", "crun", str(ctx), env=env)
    assert r.code != 0
    assert "could not run process" in r.err and "fake runtime" in r.err
    assert "Traceback" not in r.err

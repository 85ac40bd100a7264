"""The README's own command lines, run as written (in bash, `pybuild` on PATH), in a fresh
root, with the loopback registry standing in for `localhost:5000`. Lines that name hosts
on the internet (github.com, example.com) are the only ones left out: there is no network
here."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, _import_base, tool, traversable_dir
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401
from tests.tooling import require

README = REPO / "README.md"
OFFLINE = re.compile(r"https?://(?!127\.0\.0\.1|localhost)")


def readme_commands() -> list[str]:
    """Every command line of the README's sh blocks that runs pybuild (continuations
    joined, comments dropped)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#") and re.search(r"(^|\| *)pybuild ", line):
                out.append(line)
    return out


@pytest.fixture
def sandbox(base_layout: Path) -> Iterator[Path]:
    work = traversable_dir("pybuild-readme-")
    shutil.copytree(REPO / "examples", work / "examples")
    for f in (work / "examples" / "hello").iterdir():  # `.` is the hello example too
        shutil.copy(f, work / f.name)
    _import_base(work / "root", base_layout)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_readme_commands_run_as_written(sandbox: Path, registry: RunningRegistry  # noqa: F811
                                        ) -> None:
    bash = tool("bash")
    tool("podman")
    commands = readme_commands()
    assert len(commands) > 30
    bin_dir = sandbox / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "pybuild"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pybuild --root {sandbox / "root"} '
                    '"$@"\n')
    shim.chmod(0o755)
    home = sandbox / "home"
    home.mkdir()
    (home / ".npmrc").write_text("registry=https://npm.example/\n")
    agent = socket.socket(socket.AF_UNIX)
    agent.bind(str(sandbox / "agent.sock"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home),
           "PYTHONPATH": str(REPO), "SSH_AUTH_SOCK": str(sandbox / "agent.sock"),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("PYBUILD_ROOT", None)
    ran = 0
    try:
        for line in commands:
            if OFFLINE.search(line):
                continue
            if "linux/arm64" in line:
                require("qemu-aarch64")  # (skips locally, fails under CI=true)
            command = (line.replace("localhost:5000", registry.host)
                       .replace("/ci-cache", str(sandbox / "ci-cache")))
            proc = subprocess.run([bash, "-c", f"set -eo pipefail; {command}"], cwd=sandbox,
                                  env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"README: {line}\n{proc.stdout}\n{proc.stderr}"
            ran += 1
    finally:
        agent.close()
        subprocess.run([shutil.which("podman") or "podman", "rmi", "--force",
                        "docker.io/library/hello:1"], capture_output=True, check=False)
    assert ran > 25
    assert (sandbox / "id.txt").read_text().startswith("sha256:")

"""Capability checks for tests: skip locally with a reason, fail under CI=true.

A test that needs a host tool or feature says so (`require_tool("skopeo")`, or the marker
`@pytest.mark.requires("skopeo", "qemu-aarch64")`). On a developer machine a missing one
skips the test and says why; in CI (`CI=true`) it fails, so a broken setup never passes
silently as a run of skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI=true) the current test because `reason`."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing capability is a failure)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of executable `name` on PATH; skips locally / fails in CI if it is absent."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (run scripts/setup.sh)")
    return path


def _binfmt_enabled(name: str) -> str | None:
    entry = f"/proc/sys/fs/binfmt_misc/{name}"
    try:
        with open(entry) as f:
            first = f.readline().strip()
    except OSError:
        return f"binfmt_misc has no {name} entry (run `update-binfmts --enable {name}`)"
    return None if first == "enabled" else f"binfmt_misc entry {name} is {first}"


def _userns() -> str | None:
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare is not installed"
    proc = subprocess.run([unshare, "--user", "--map-root-user", "true"],
                          capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else f"no user namespaces: {proc.stderr.strip()}"


def _root() -> str | None:
    return None if os.geteuid() == 0 else "needs root"


# Capabilities that are not a single executable on PATH: each probe returns why it is
# unavailable, or None.
_PROBES: dict[str, Callable[[], str | None]] = {
    "qemu-aarch64": lambda: _binfmt_enabled("qemu-aarch64"),
    "userns": _userns,
    "root": _root,
}


def require(capability: str) -> None:
    """A named capability (see _PROBES) or else an executable of that name."""
    probe = _PROBES.get(capability)
    if probe is None:
        require_tool(capability)
        return
    why = probe()
    if why is not None:
        missing(f"{capability}: {why}")

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
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
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


# -- temp dirs outside pytest's tmp_path ------------------------------------------------

# Each test process has a token that every temp dir it makes outside tmp_path carries in
# its name (`pybuild-<what>-<token>-XXXXXXXX`), so the session check in tests/conftest.py
# can tell this run's leftovers from those of a run beside it on a shared machine. (The
# dirs stay directly in /var/tmp: pybuild roots there hold unix sockets, whose paths must
# stay short.)
PROCESS_TOKEN = uuid.uuid4().hex[:6]
TMP_DIRS = (Path("/var/tmp"), Path(tempfile.gettempdir()))


def traversable_dir(prefix: str) -> Path:
    """A temp dir every user can traverse: a root's build namespace maps root elsewhere,
    so pybuild roots must not sit under 0700 directories such as pytest's tmp_path.
    The caller removes it (a fixture's teardown)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{PROCESS_TOKEN}-", dir="/var/tmp"))
    path.chmod(0o755)
    return path


def pybuild_tmpdir() -> Path:
    """The TMPDIR given to pybuild processes the tests start: what pybuild leaves in its
    temp dir shows up there."""
    path = Path("/var/tmp") / f"pybuild-tmpdir-{PROCESS_TOKEN}"
    if not path.is_dir():
        path.mkdir(exist_ok=True)
        path.chmod(0o1777)  # as /tmp: the unprivileged test user's pybuild writes there too
    return path


def leftovers() -> list[Path]:
    """This process's entries in /var/tmp and /tmp, and what is inside its TMPDIR."""
    found = {p for d in TMP_DIRS for p in d.glob(f"*{PROCESS_TOKEN}*")}
    tmpdir = Path("/var/tmp") / f"pybuild-tmpdir-{PROCESS_TOKEN}"
    found.discard(tmpdir)
    if tmpdir.is_dir():
        found.update(tmpdir.iterdir())
    return sorted(found)

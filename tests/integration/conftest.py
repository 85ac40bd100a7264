"""Fixtures for end-to-end tests: a pybuild root with the busybox base image, a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_CACHE = REPO / "testdata" / "generated" / "busybox"


@dataclass
class Run:
    code: int
    out: str
    err: str


PybuildRunner = Callable[..., Run]


@pytest.fixture(scope="session")
def base_layout() -> Path:
    """The deterministic multi-arch busybox OCI layout (made once, from Debian packages)."""
    from pybuild.testimages.busybox import build_busybox_layout

    layout = BASE_CACHE / "oci"
    build_busybox_layout(BASE_CACHE)
    return layout


def _import_base(root: Path, layout: Path) -> None:
    from pybuild.root import Root
    from pybuild.testimages.busybox import import_into_store

    stores = Root(root)
    import_into_store(stores.content, stores.images, layout, name="busybox:latest")


def traversable_dir(prefix: str) -> Path:
    """A temp dir every user can traverse (see tests.tooling.traversable_dir); the
    caller removes it."""
    from tests.tooling import traversable_dir as make

    return make(prefix)


@pytest.fixture(scope="session")
def shared_root(base_layout: Path) -> Iterator[Path]:
    """A pybuild root shared by the tests of one worker (its cache makes them fast)."""
    base = traversable_dir("pybuild-test-")
    root = base / "root"
    _import_base(root, base_layout)
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_root(base_layout: Path) -> Iterator[Path]:
    base = traversable_dir("pybuild-test-")
    root = base / "root"
    _import_base(root, base_layout)
    yield root
    shutil.rmtree(base, ignore_errors=True)


def run_pybuild(root: Path, *args: str, cwd: Path | None = None, user: str | None = None,
                env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    cmd = [sys.executable, "-m", "pybuild", "--root", str(root), *map(str, args)]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    from tests.tooling import pybuild_tmpdir

    full_env = dict(os.environ)
    full_env.pop("PYBUILD_ROOT", None)
    full_env["PYTHONPATH"] = str(REPO)
    full_env["TMPDIR"] = str(pybuild_tmpdir())  # what pybuild leaves there is seen
    if env:
        full_env.update(env)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or REPO, env=full_env,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def pybuild(shared_root: Path) -> PybuildRunner:
    def runner(*args: str, **kw: object) -> Run:
        return run_pybuild(shared_root, *args, **kw)  # type: ignore[arg-type]

    return runner


def tool(name: str) -> str:
    """Path of a host tool; skips locally but fails under CI=true when it is missing."""
    from tests.tooling import require_tool

    return require_tool(name)


@pytest.fixture
def trav() -> Iterator[Path]:
    """A scratch dir every user can traverse (a root build's steps run as a mapped id)."""
    d = traversable_dir("pybuild-scratch-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def umoci_rootfs(root: Path, image: str, tmp: Path, user: str | None = None) -> Path:
    """Export `image` as an OCI layout and unpack it with umoci, an independent reader;
    returns the rootfs directory."""
    umoci = tool("umoci")
    layout = tmp / "umoci-layout"
    r = run_pybuild(root, "export", image, "-o", f"type=oci,dest={layout},tar=false",
                    user=user)
    assert r.code == 0, r.err
    bundle = tmp / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:{image.split(':')[1]}",
                    str(bundle)], check=True, capture_output=True)
    return bundle / "rootfs"


def rootless_root(work: Path, user: str, base_layout: Path) -> Path:
    """Hand `work` (contexts already written into it) to `user`, and give the user a pybuild
    root under it with the busybox base loaded by the user's own `pybuild load`."""
    import pwd

    layout = work / "base"
    shutil.copytree(base_layout, layout)
    pw = pwd.getpwnam(user)
    for p in [work, *work.rglob("*")]:
        os.lchown(p, pw.pw_uid, pw.pw_gid)
    root = work / "root"
    r = run_pybuild(root, "load", "-i", str(layout), "-t", "busybox:latest", user=user)
    assert r.code == 0, r.err
    return root


def copy_example(name: str, dest: Path) -> Path:
    src = REPO / "examples" / name
    shutil.copytree(src, dest)
    return dest

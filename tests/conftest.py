"""Project-wide test hooks: the `requires(...)` capability marker, and the check that the
suite leaves nothing behind in /var/tmp or /tmp."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.tooling import PROCESS_TOKEN, leftovers, pybuild_tmpdir, require, traversable_dir


def pytest_runtest_setup(item: pytest.Item) -> None:
    # @pytest.mark.requires("skopeo", "qemu-aarch64"): skip locally, fail under CI=true.
    for marker in item.iter_markers(name="requires"):
        for capability in marker.args:
            require(str(capability))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every temp dir a test process makes outside tmp_path carries its token
    (tests.tooling.traversable_dir, the registry's, the TMPDIR of the pybuild processes
    it runs); when its session ends, none may be left. Set up before every other fixture,
    so it is torn down after them all have cleaned up."""
    yield
    left = leftovers()
    for path in left:  # reported once, not accumulated run after run
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    shutil.rmtree(pybuild_tmpdir(), ignore_errors=True)
    if left:
        pytest.fail(f"the tests left {len(left)} entries in /var/tmp or /tmp (token "
                    f"{PROCESS_TOKEN}): {', '.join(str(p) for p in left[:10])}; remove "
                    "them in the fixture that made them", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def private_podman_storage(nothing_left_behind: None) -> Iterator[None]:
    """podman (run by tests, and by `pybuild build --load`) keeps its images in a store of
    this test process's own: parallel workers never see each other's images vanish (a
    `podman rmi` in one test, a `podman load` in another), and the machine's own store is
    left as it was (CI machines are reused)."""
    base = traversable_dir("pybuild-podman-")
    conf = base / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "graph"}"\n'
                    f'runroot = "{base / "run"}"\n')
    old = os.environ.get("CONTAINERS_STORAGE_CONF")
    os.environ["CONTAINERS_STORAGE_CONF"] = str(conf)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CONTAINERS_STORAGE_CONF", None)
        else:
            os.environ["CONTAINERS_STORAGE_CONF"] = old
        podman = shutil.which("podman")
        if podman and (base / "graph").exists():  # its layers may be read-only to rm -rf
            subprocess.run([podman, "--storage-driver", "vfs", "--root", str(base / "graph"),
                            "--runroot", str(base / "run"), "system", "reset", "--force"],
                           capture_output=True, check=False, timeout=120)
        shutil.rmtree(base, ignore_errors=True)

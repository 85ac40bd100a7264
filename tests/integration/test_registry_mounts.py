"""Cross-repository blob mounts from what pulls and pushes remember (the blob source index),
against a real registry, seen through a proxy that records every request: what is already
in another repository of the registry is mounted, never uploaded again."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.oci.descriptor import Descriptor
from pybuild.registry import RegistryOptions, TransferEvent, pull_sync, push_sync
from pybuild.registry.blobindex import BlobSources
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.conftest import REPO
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401
from tests.registry_images import layers_of, random_image
from tests.tooling import require_tool


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(registry.host) as p:
        yield p


def uploads(proxy: FaultProxy, repo: str) -> list[str]:
    """Requests that carried blob data into `repo`."""
    return [f"{h.method} {h.path}" for h in proxy.log
            if h.method in ("PATCH", "PUT") and f"/v2/{repo}/blobs/uploads/" in h.path]


def test_pull_then_push_elsewhere_mounts_every_blob(proxy: FaultProxy,
                                                    registry: RunningRegistry,  # noqa: F811
                                                    tmp_path: Path) -> None:
    src = ContentStore(tmp_path / "src")
    image = random_image(src, sizes=(300_000, 200_000), seed=51)
    push_sync(src, image, registry.ref("mounts/base:1"), options=RegistryOptions(auth_files=()))
    options = RegistryOptions(auth_files=(), blob_index=tmp_path / "root" / "blob-sources.db")
    store = ContentStore(tmp_path / "content")
    pull_sync(proxy.ref("mounts/base:1"), store, options=options)
    events: list[TransferEvent] = []
    push_sync(store, image, proxy.ref("mounts/app:1"), options=options, progress=events.append)
    assert {e.action for e in events} == {"mount", "manifest"}
    assert not uploads(proxy, "mounts/app")
    mounts = [h.path for h in proxy.log if h.method == "POST"]
    assert mounts and all("from=mounts%2Fbase" in p or "from=mounts/base" in p for p in mounts)
    # a new tag of the same image in the same repository: nothing but the manifest
    events.clear()
    push_sync(store, image, proxy.ref("mounts/app:2"), options=options, progress=events.append)
    assert {e.action for e in events} == {"exists", "manifest"}
    # an image on the same base: only its own layer is uploaded
    child = random_image(store, sizes=(100_000,), seed=52, base=layers_of(store, image))
    events.clear()
    proxy.log.clear()
    push_sync(store, child, proxy.ref("mounts/child:1"), options=options,
              progress=events.append)
    actions = sorted(e.action for e in events if e.action != "manifest")
    assert actions == ["mount", "mount", "push", "push"]  # 2 base layers; config + new layer
    raw = subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.ref('mounts/child:1')}"], capture_output=True,
                         check=True, timeout=60).stdout
    assert raw == store.read(child.digest)


def test_a_stale_hint_uploads_and_is_forgotten(proxy: FaultProxy, tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    image = random_image(store, sizes=(64_000,), seed=53)
    index = BlobSources(tmp_path / "blob-sources.db")
    layer = layers_of(store, image)[0]
    index.record(proxy.host, "mounts/gone", [layer.digest])
    options = RegistryOptions(auth_files=(), blob_index=index.path)
    events: list[TransferEvent] = []
    push_sync(store, image, proxy.ref("mounts/fresh:1"), options=options,
              progress=events.append)
    assert "push" in {e.action for e in events}
    assert any("from=mounts%2Fgone" in h.path or "from=mounts/gone" in h.path
               for h in proxy.log if h.method == "POST")
    assert index.repositories(proxy.host, layer.digest) == ["mounts/fresh"]


def test_two_pushes_at_once_share_the_index(fresh_root: Path, tmp_path: Path,
                                            proxy: FaultProxy) -> None:
    env = {"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": str(tmp_path / "none.json"),
           "PYTHONPATH": str(REPO)}
    full = dict(os.environ, **env)
    full.pop("PYBUILD_ROOT", None)
    procs = [subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(fresh_root),
                               "push", "busybox:latest", proxy.ref(f"mounts/ci{i}:1")],
                              env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO) for i in (1, 2)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    index = BlobSources(fresh_root / "cache" / "blob-sources.db")
    uploaded = {h.path.rsplit("digest=", 1)[1].replace("%3A", ":") for h in proxy.log
                if h.method == "PUT" and "digest=" in h.path}
    assert uploaded
    for digest in uploaded:  # each push recorded what it put, neither lost the other's rows
        assert set(index.repositories(proxy.host, digest, limit=10)) & {"mounts/ci1",
                                                                         "mounts/ci2"}
    # a third repository (a new CI image on the same base) uploads nothing
    proxy.log.clear()
    third = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(fresh_root), "push",
                            "busybox:latest", proxy.ref("mounts/ci3:1")], env=full,
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert third.returncode == 0, third.stderr
    assert not uploads(proxy, "mounts/ci3")
    assert [h for h in proxy.log if h.method == "POST" and "mount=" in h.path]


def test_mount_index_survives_an_unusable_database(proxy: FaultProxy, tmp_path: Path) -> None:
    """The index is a hint: a broken file never fails a push."""
    store = ContentStore(tmp_path / "content")
    image: Descriptor = random_image(store, sizes=(10_000,), seed=54)
    bad = tmp_path / "blob-sources.db"
    bad.write_bytes(b"this is not a database" * 100)
    options = RegistryOptions(auth_files=(), blob_index=bad)
    assert push_sync(store, image, proxy.ref("mounts/robust:1"), options=options) == \
        image.digest

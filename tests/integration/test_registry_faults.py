"""Transient registry faults (F10): a fault-injecting proxy in front of a real docker-registry.

One 500, a 429 with Retry-After, a connection reset mid-blob, a stall, a broken upload: pull
and push recover (downloads resume with Range, uploads restart from a fresh session), and
what they leave is read back by skopeo. Wrong bytes are refused and nothing unverified enters
the content store. The retry budget is small here and bounded: a fault that does not go
away fails with an error that says what happened and how often pybuild tried.
"""

from __future__ import annotations

import email.utils
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.errors import IntegrityError
from pybuild.oci.descriptor import Descriptor
from pybuild.registry import (
    RegistryError,
    RegistryOptions,
    pull_sync,
    push_sync,
)
from pybuild.registry.push import image_parts
from pybuild.registry.retry import RetryPolicy
from tests.fault_proxy import Fault, FaultProxy, fault_proxy
from tests.integration.conftest import run_pybuild
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401
from tests.registry_images import layers_of, random_image
from tests.tooling import require_tool

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2, max_retry_after=5.0)
OPTS = RegistryOptions(auth_files=(), timeout=2.0, retry=FAST)
# the CLI reads the same budget from the environment
CLI_ENV = {"PYBUILD_REGISTRY_RETRIES": "3", "PYBUILD_REGISTRY_TIMEOUT": "2",
           "REGISTRY_AUTH_FILE": "/nonexistent/auth.json"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContentStore, Descriptor]:
    """An image with a 3 MB layer (big enough to break in the middle) and a small one."""
    store = ContentStore(tmp_path_factory.mktemp("faults") / "content")
    return store, random_image(store, sizes=(3 << 20, 4096), seed=10)


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, source: tuple[ContentStore, Descriptor]  # noqa: F811
           ) -> str:
    store, desc = source
    push_sync(store, desc, registry.ref("faults/img:1"), options=OPTS)
    return "faults/img:1"


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(registry.host) as p:
        yield p


def big_layer(source: tuple[ContentStore, Descriptor]) -> Descriptor:
    store, desc = source
    return max(layers_of(store, desc), key=lambda d: d.size)


def assert_pulled(store: ContentStore, source: tuple[ContentStore, Descriptor]) -> None:
    src, desc = source
    blobs, manifests = image_parts(src, desc)
    for d in [*blobs, *(m for m, _ in manifests)]:
        store.verify(d.digest)
    assert not _partials(store), "partial downloads left in ingest/"


def skopeo_raw(registry: RunningRegistry, name: str) -> bytes:  # noqa: F811
    proc = subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                           f"docker://{registry.ref(name)}"], capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- pull ----------------------------------------------------------------------------------


def test_pull_recovers_from_one_500_on_a_blob(proxy: FaultProxy, pushed: str,
                                              source: tuple[ContentStore, Descriptor],
                                              tmp_path: Path) -> None:
    layer = big_layer(source)
    proxy.add(Fault("status", f"/blobs/{layer.digest}$", method="GET", status=500))
    store = ContentStore(tmp_path / "content")
    pull_sync(proxy.ref(pushed), store, options=OPTS)
    assert_pulled(store, source)
    assert [h.outcome for h in proxy.hits(f"/blobs/{layer.digest}$", "GET")] == [
        "FAULT status 500", "200"]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_pull_honours_retry_after_on_429(proxy: FaultProxy, pushed: str, form: str,
                                         source: tuple[ContentStore, Descriptor],
                                         tmp_path: Path) -> None:
    wait = "1" if form == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)
    proxy.add(Fault("status", "/manifests/1$", method="GET", status=429,
                    headers={"Retry-After": wait}))
    store = ContentStore(tmp_path / "content")
    pull_sync(proxy.ref(pushed), store, options=OPTS)
    assert_pulled(store, source)
    first, second = proxy.hits("/manifests/1$", "GET")
    assert first.outcome == "FAULT status 429" and second.outcome == "200"
    # the computed backoff is at most 0.2 s here: a longer pause is Retry-After's
    assert second.time - first.time >= 0.9


def test_a_retry_after_beyond_the_budget_fails_at_once(proxy: FaultProxy, pushed: str,
                                                       tmp_path: Path) -> None:
    proxy.add(Fault("status", "/manifests/1$", status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(RegistryError) as err:
        pull_sync(proxy.ref(pushed), ContentStore(tmp_path / "content"), options=OPTS)
    assert "retry after 3600 s" in str(err.value) and "longer than pybuild waits" in str(
        err.value)
    assert len(proxy.hits("/manifests/1$")) == 1


def test_pull_resumes_a_reset_blob_with_a_range_request(
        proxy: FaultProxy, pushed: str, source: tuple[ContentStore, Descriptor],
        tmp_path: Path) -> None:
    layer = big_layer(source)
    proxy.add(Fault("reset", f"/blobs/{layer.digest}$", method="GET", after_bytes=1 << 20))
    store = ContentStore(tmp_path / "content")
    pull_sync(proxy.ref(pushed), store, options=OPTS)
    assert_pulled(store, source)
    first, second = proxy.hits(f"/blobs/{layer.digest}$", "GET")
    assert first.outcome == "FAULT reset" and "range" not in first.headers
    assert second.headers["range"] == f"bytes={1 << 20}-" and second.outcome == "206"


def test_pull_resumes_after_a_stall_and_names_the_timeout(
        proxy: FaultProxy, pushed: str, source: tuple[ContentStore, Descriptor],
        tmp_path: Path) -> None:
    layer = big_layer(source)
    proxy.add(Fault("stall", f"/blobs/{layer.digest}$", method="GET", after_bytes=512 << 10,
                    stall_seconds=20))
    store = ContentStore(tmp_path / "content")
    pull_sync(proxy.ref(pushed), store, options=OPTS)
    assert_pulled(store, source)
    assert proxy.hits(f"/blobs/{layer.digest}$")[1].headers["range"] == f"bytes={512 << 10}-"
    # a stall that never ends: the error names the timeout and the attempts
    proxy.add(Fault("stall", f"/blobs/{layer.digest}$", method="GET", after_bytes=1000,
                    stall_seconds=20, times=10))
    fresh = ContentStore(tmp_path / "fresh")
    with pytest.raises(RegistryError) as err:
        pull_sync(proxy.ref(pushed), fresh, options=OPTS)
    text = str(err.value)
    assert "timed out: no data for 2 s" in text and "gave up after 4 attempts" in text
    # each try resumed where the last stopped: 4 x 1000 bytes
    assert f"download interrupted after 4000 of {layer.size} bytes" in text
    assert not fresh.has(layer.digest) and not _partials(fresh)


def test_wrong_bytes_are_refused_and_nothing_unverified_is_stored(
        proxy: FaultProxy, pushed: str, source: tuple[ContentStore, Descriptor],
        tmp_path: Path) -> None:
    layer = big_layer(source)
    proxy.add(Fault("corrupt", f"/blobs/{layer.digest}$", method="GET", times=10))
    store = ContentStore(tmp_path / "content")
    with pytest.raises(IntegrityError) as err:
        pull_sync(proxy.ref(pushed), store, options=OPTS)
    assert str(layer.digest) in str(err.value) and "do not match" in str(err.value)
    assert not store.has(layer.digest)
    assert not _partials(store)
    # refused, not retried: a registry that lies is not a transient fault
    assert len(proxy.hits(f"/blobs/{layer.digest}$", "GET")) == 1
    # a corrupted manifest is refused too, and no manifest is published
    proxy.faults.clear()
    proxy.add(Fault("corrupt", "/manifests/1$", method="GET", times=10))
    with pytest.raises(IntegrityError):
        pull_sync(proxy.ref(pushed), ContentStore(tmp_path / "m"), options=OPTS)


def test_a_fault_that_stays_gives_up_within_the_budget(proxy: FaultProxy, pushed: str,
                                                       tmp_path: Path) -> None:
    proxy.add(Fault("status", "/manifests/1$", status=503, times=100))
    with pytest.raises(RegistryError) as err:
        pull_sync(proxy.ref(pushed), ContentStore(tmp_path / "content"), options=OPTS)
    assert "answered HTTP 503" in str(err.value) and "gave up after 4 attempts" in str(
        err.value)
    assert len(proxy.hits("/manifests/1$")) == 4


# --- push ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    Fault("status", r"/blobs/uploads/$", method="POST", status=500),
    Fault("reset-request", r"/blobs/uploads/[^?]+\?", method="PUT"),
    Fault("status", r"/manifests/v1$", method="PUT", status=502),
    Fault("drop", r"/blobs/uploads/[^?]+\?.*digest=", method="PUT"),  # after the registry
], ids=["500-on-POST", "reset-sending-PUT", "502-on-manifest", "reset-after-PUT"])
def test_push_recovers(proxy: FaultProxy, registry: RunningRegistry,  # noqa: F811
                       source: tuple[ContentStore, Descriptor], fault: Fault,
                       request: pytest.FixtureRequest) -> None:
    store, desc = source
    name = f"faults/push-{request.node.callspec.id.lower()}:v1"
    proxy.add(Fault(fault.kind, fault.path, method=fault.method, status=fault.status))
    assert push_sync(store, desc, proxy.ref(name), options=OPTS) == desc.digest
    assert skopeo_raw(registry, name) == store.read(desc.digest)
    assert any(h.outcome.startswith("FAULT") for h in proxy.log)
    fresh = ContentStore(Path(str(store.root) + f"-{request.node.callspec.id}"))
    pull_sync(registry.ref(name), fresh, options=OPTS)
    assert_pulled(fresh, source)


def test_a_chunked_upload_broken_midway_restarts(proxy: FaultProxy,
                                                 registry: RunningRegistry,  # noqa: F811
                                                 source: tuple[ContentStore, Descriptor],
                                                 tmp_path: Path) -> None:
    store, desc = source
    layer = big_layer(source)
    options = RegistryOptions(auth_files=(), timeout=2.0, retry=FAST, chunk_size=1 << 20)
    # the second PATCH of the big layer breaks while it is being sent
    patches = {"n": 0}
    original = proxy._take

    def second_patch(method: str, path: str) -> Fault | None:
        if method == "PATCH":
            patches["n"] += 1
            if patches["n"] == 2:
                return Fault("reset-request", "", after_bytes=300 << 10)
        return original(method, path)

    proxy._take = second_patch  # type: ignore[method-assign]
    name = "faults/chunked:v1"
    push_sync(store, desc, proxy.ref(name), options=options)
    assert skopeo_raw(registry, name) == store.read(desc.digest)
    starts = [h for h in proxy.log if h.method == "POST"]
    # a fresh session after the break: one POST more than there are blobs uploaded
    uploaded = len([b for b in image_parts(store, desc)[0]])
    assert len(starts) == uploaded + 1
    assert any(h.outcome == "FAULT reset-request" for h in proxy.log)
    out = tmp_path / "dir"
    subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false",
                    f"docker://{registry.ref(name)}", f"dir:{out}"], check=True,
                   capture_output=True, timeout=120)
    assert (out / layer.digest.hex).stat().st_size == layer.size


# --- the CLI: pull, push and build FROM a remote image ------------------------------------


def test_cli_pull_push_and_build_from_recover(fresh_root: Path, tmp_path: Path,
                                              proxy: FaultProxy,
                                              registry: RunningRegistry,  # noqa: F811
                                              base_layout: Path) -> None:
    skopeo = require_tool("skopeo")
    subprocess.run([skopeo, "copy", "--all", "--dest-tls-verify=false",
                    f"oci:{base_layout}:latest", f"docker://{registry.ref('faults/bb:1')}"],
                   check=True, capture_output=True, timeout=120)
    env = dict(CLI_ENV, HOME=str(tmp_path))
    # pull into an empty root: a 500 on the manifest and a reset in the middle of a layer
    proxy.add(Fault("status", "/manifests/1$", method="GET", status=500))
    layers = "|".join(p.name for p in (base_layout / "blobs" / "sha256").iterdir()
                      if p.stat().st_size > 500_000)  # busybox's layers, not the configs
    proxy.add(Fault("reset", rf"/blobs/sha256:({layers})$", method="GET", after_bytes=100_000))
    r = run_pybuild(fresh_root.parent / "empty", "pull", proxy.ref("faults/bb:1"), env=env)
    assert r.code == 0, r.err
    assert sum(h.outcome.startswith("FAULT") for h in proxy.log) == 2
    assert any("range" in h.headers for h in proxy.log)
    # build FROM the remote image, in a root that does not have it: a 429 and a reset
    other = fresh_root.parent / "other"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {proxy.ref('faults/bb:1')}\nRUN echo ok > /ok\n")
    proxy.add(Fault("status", "/manifests/1$", method="GET", status=429,
                    headers={"Retry-After": "1"}))
    proxy.add(Fault("reset", rf"/blobs/sha256:({layers})$", method="GET", after_bytes=50_000))
    proxy.add(Fault("status", r"/faults/built/manifests/1$", method="PUT", status=500))
    b = run_pybuild(other, "build", "-t", proxy.ref("faults/built:1"), "--push",
                    "--progress", "plain", str(ctx), env=env)
    assert b.code == 0, b.err
    # push to another repository: a 500 on the first blob's mount (the blobs are known to
    # be in faults/built) and on the manifest PUT
    proxy.add(Fault("status", r"/blobs/uploads/(\?|$)", method="POST", status=500))
    proxy.add(Fault("status", r"/manifests/2$", method="PUT", status=500))
    p = run_pybuild(other, "push", proxy.ref("faults/built:1"), proxy.ref("faults/copy:2"),
                    env=env)
    assert p.code == 0, p.err
    assert skopeo_raw(registry, "faults/copy:2") == skopeo_raw(registry, "faults/built:1")
    assert not proxy.hits(r"/faults/copy/blobs/uploads/[^?]", "PATCH") and not proxy.hits(
        r"/faults/copy/blobs/uploads/[^?]", "PUT")  # mounted, nothing uploaded
    assert sum(h.outcome.startswith("FAULT") for h in proxy.log) == 7


def _partials(store: ContentStore) -> list[str]:
    """What a transfer left in ingest/ (the live process's owner lock is not a leftover)."""
    return [p.name for p in store.ingest_dir.iterdir() if not p.name.startswith("owner@")]

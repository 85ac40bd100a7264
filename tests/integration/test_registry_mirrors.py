"""Mirrors, location rewrites, insecure and blocked registries (registries.conf and
--registry-mirror), with two real registries on loopback, one acting as the other's mirror.
Proxies in front of both record which one each request went to."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.errors import UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.registry import (
    RegistryNotFoundError,
    RegistryOptions,
    RegistryTLSError,
    pull_sync,
    push_sync,
    resolve_sync,
)
from pybuild.registry.endpoints import RegistryMirror
from pybuild.registry.registries_conf import load_registries_conf
from pybuild.registry.retry import RetryPolicy
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.conftest import run_pybuild
from tests.registry_fixture import (  # noqa: F401  (pytest fixtures)
    RunningRegistry,
    auth_registry,
    free_port,
    registry,
    run_registry,
)
from tests.registry_images import random_image
from tests.tooling import require_tool

FAST = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1)


@pytest.fixture(scope="module")
def mirror_registry() -> Iterator[RunningRegistry]:
    with run_registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: RunningRegistry,  # noqa: F811
           mirror_registry: RunningRegistry) -> tuple[ContentStore, dict[str, Descriptor]]:
    """`a` only at the origin, `b` only at the mirror (under mirror/cache/... too)."""
    store = ContentStore(tmp_path_factory.mktemp("mirrors") / "content")
    opts = RegistryOptions(auth_files=())
    made = {name: random_image(store, sizes=(50_000,), seed=seed)
            for name, seed in (("a", 41), ("b", 42), ("c", 43))}
    push_sync(store, made["a"], registry.ref("mir/app:a"), options=opts)
    push_sync(store, made["b"], mirror_registry.ref("mir/app:b"), options=opts)
    push_sync(store, made["b"], mirror_registry.ref("cache/mir/app:b"), options=opts)
    return store, made


@pytest.fixture
def origin(registry: RunningRegistry) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(registry.host) as p:
        yield p


@pytest.fixture
def mirror(mirror_registry: RunningRegistry) -> Iterator[FaultProxy]:
    with fault_proxy(mirror_registry.host) as p:
        yield p


def conf(tmp_path: Path, text: str) -> RegistryOptions:
    path = tmp_path / "registries.conf"
    path.write_text(text)
    return RegistryOptions(auth_files=(), retry=FAST, registries=load_registries_conf(path))


def test_pulls_try_mirrors_in_order_then_the_origin(
        origin: FaultProxy, mirror: FaultProxy, tmp_path: Path,
        images: tuple[ContentStore, dict[str, Descriptor]]) -> None:
    _, made = images
    dead = f"127.0.0.1:{free_port()}"
    options = conf(tmp_path, f"""
[[registry]]
prefix = "{origin.host}"
location = "{origin.host}"
[[registry.mirror]]
location = "{dead}"
[[registry.mirror]]
location = "{mirror.host}"
""")
    # only the mirror has b: the origin is never asked
    store = ContentStore(tmp_path / "b")
    top = pull_sync(origin.ref("mir/app:b"), store, options=options)
    assert top.digest == made["b"].digest
    store.verify(made["b"].digest)
    assert mirror.hits("/manifests/b$") and not origin.log
    # only the origin has a: the dead mirror and the mirror's 404 hand over to it
    store = ContentStore(tmp_path / "a")
    assert pull_sync(origin.ref("mir/app:a"), store, options=options).digest == made["a"].digest
    assert [h.outcome for h in mirror.hits("/manifests/a$")] == ["404"]
    assert origin.hits("/manifests/a$")
    # neither has it: the origin's error, with what the mirrors said in front of it
    with pytest.raises(RegistryNotFoundError) as err:
        resolve_sync(origin.ref("mir/app:none"), options=options)
    text = str(err.value)
    assert "mirrors also failed" in text and dead in text and mirror.host in text
    assert text.index("not found") < text.index("mirrors also failed")


def test_mirror_location_with_a_path_and_digest_only_mirrors(
        origin: FaultProxy, mirror: FaultProxy, tmp_path: Path,
        images: tuple[ContentStore, dict[str, Descriptor]]) -> None:
    _, made = images
    options = conf(tmp_path, f"""
[[registry]]
location = "{origin.host}/mir"
mirror-by-digest-only = true
[[registry.mirror]]
location = "{mirror.host}/cache/mir"
""")
    by_digest = origin.ref(f"mir/app@{made['b'].digest}")
    store = ContentStore(tmp_path / "b")
    pull_sync(by_digest, store, options=options)
    assert mirror.hits(r"/v2/cache/mir/app/manifests/sha256:")
    # a tag is never taken from a digest-only mirror (the origin has no b)
    mirror.log.clear()
    with pytest.raises(RegistryNotFoundError):
        resolve_sync(origin.ref("mir/app:b"), options=options)
    assert not mirror.log


def test_pushes_go_to_the_origin_only(origin: FaultProxy, mirror: FaultProxy,
                                      registry: RunningRegistry,  # noqa: F811
                                      tmp_path: Path,
                                      images: tuple[ContentStore, dict[str, Descriptor]]) -> None:
    store, made = images
    options = conf(tmp_path, f"""
[[registry]]
location = "{origin.host}"
[[registry.mirror]]
location = "{mirror.host}"
""")
    push_sync(store, made["c"], origin.ref("mir/app:c"), options=options)
    assert not mirror.log
    raw = subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.ref('mir/app:c')}"], capture_output=True,
                         check=True, timeout=60).stdout
    assert raw == store.read(made["c"].digest)


def test_a_location_rewrite_sends_pulls_elsewhere(origin: FaultProxy, mirror: FaultProxy,
                                                  tmp_path: Path,
                                                  images: tuple[ContentStore,
                                                                dict[str, Descriptor]]) -> None:
    _, made = images
    options = conf(tmp_path, f"""
[[registry]]
prefix = "example.invalid/team"
location = "{mirror.host}/cache/mir"
""")
    top, _ = resolve_sync("example.invalid/team/app:b", options=options)
    assert top.digest == made["b"].digest
    assert mirror.hits("/v2/cache/mir/app/manifests/b$")


def test_blocked_registries_refuse_pulls_and_pushes(
        origin: FaultProxy, tmp_path: Path,
        images: tuple[ContentStore, dict[str, Descriptor]]) -> None:
    store, made = images
    options = conf(tmp_path, f'[[registry]]\nlocation = "{origin.host}"\nblocked = true\n')
    for action in (lambda: resolve_sync(origin.ref("mir/app:a"), options=options),
                   lambda: push_sync(store, made["a"], origin.ref("mir/app:x"),
                                     options=options)):
        with pytest.raises(UserError, match=r"is blocked in .*registries\.conf"):
            action()
    assert not origin.log


def test_insecure_registry_from_registries_conf(auth_registry: RunningRegistry,  # noqa: F811
                                                tmp_path: Path,
                                                images: tuple[ContentStore,
                                                              dict[str, Descriptor]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    store, made = images
    creds = f"{auth_registry.username}:{auth_registry.password}"
    ref = auth_registry.ref("mir/insecure:1")
    with pytest.raises(RegistryTLSError):
        push_sync(store, made["a"], ref, options=RegistryOptions(auth_files=(), creds=creds))
    path = tmp_path / "registries.conf"
    path.write_text(f'[[registry]]\nlocation = "{auth_registry.host}"\ninsecure = true\n')
    options = RegistryOptions(auth_files=(), creds=creds, registries=load_registries_conf(path))
    push_sync(store, made["a"], ref, options=options)
    pull_sync(ref, ContentStore(tmp_path / "c"), options=options)


def test_registry_mirror_flag_comes_first(origin: FaultProxy, mirror: FaultProxy,
                                          tmp_path: Path,
                                          images: tuple[ContentStore,
                                                        dict[str, Descriptor]]) -> None:
    _, made = images
    options = RegistryOptions(auth_files=(), retry=FAST, mirrors=(
        RegistryMirror.parse(f"{origin.host}=http://{mirror.host}/cache"),))
    top, _ = resolve_sync(origin.ref("mir/app:b"), options=options)
    assert top.digest == made["b"].digest and not origin.log


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_pull_and_build_through_mirrors(fresh_root: Path, tmp_path: Path,
                                            origin: FaultProxy, mirror: FaultProxy,
                                            mirror_registry: RunningRegistry,
                                            base_layout: Path) -> None:
    subprocess.run([require_tool("skopeo"), "copy", "--all", "--dest-tls-verify=false",
                    f"oci:{base_layout}:latest",
                    f"docker://{mirror_registry.ref('mirrored/busybox:1')}"],
                   check=True, capture_output=True, timeout=120)
    env = {"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": str(tmp_path / "none.json"),
           "CONTAINERS_REGISTRIES_CONF": str(tmp_path / "registries.conf")}
    (tmp_path / "registries.conf").write_text(
        f'[[registry]]\nlocation = "{origin.host}"\n[[registry.mirror]]\n'
        f'location = "{mirror.host}"\n')
    r = run_pybuild(fresh_root.parent / "pulled", "pull", origin.ref("mirrored/busybox:1"),
                    env=env)
    assert r.code == 0, r.err
    assert mirror.hits("/manifests/1$") and not origin.hits("/manifests/")
    # --registry-mirror on build, with nothing in registries.conf
    (tmp_path / "registries.conf").write_text("")
    mirror.log.clear()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {origin.ref('mirrored/busybox:1')}\nRUN true\n")
    b = run_pybuild(fresh_root.parent / "built", "build", "--registry-mirror",
                    f"{origin.host}={mirror.host}", str(ctx), env=env)
    assert b.code == 0, b.err
    assert mirror.hits("/manifests/1$") and not origin.hits("/manifests/")
    # a typo in registries.conf is an error naming the file and the key meant
    (tmp_path / "registries.conf").write_text(
        f'[[registry]]\nlocation = "{origin.host}"\ninsecur = true\n')
    bad = run_pybuild(fresh_root.parent / "bad", "pull", origin.ref("mirrored/busybox:1"),
                      env=env)
    assert bad.code == 1 and "unknown key 'insecur'" in bad.err
    assert "did you mean 'insecure'" in bad.err and "registries.conf" in bad.err
    assert "Traceback" not in bad.err

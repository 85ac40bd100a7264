"""The registry client against a real docker-registry (distribution 2.8) on loopback.

What pybuild pushes is read back by skopeo (an independent implementation); what skopeo
pushes is pulled by pybuild; every pulled blob is checked against its digest.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.canonical import canonical_json
from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform
from pybuild.registry import (
    RegistryAuthError,
    RegistryNotFoundError,
    RegistryOptions,
    RegistryTLSError,
    RegistryUnreachableError,
    TransferEvent,
    pull_sync,
    push_sync,
    resolve_sync,
    run_sync,
)
from pybuild.registry.client import RegistryClient
from pybuild.registry.errors import ManifestBlobUnknownError
from pybuild.registry.push import _Pusher, image_parts
from tests.registry_fixture import (  # noqa: F401  (pytest fixtures)
    RunningRegistry,
    auth_registry,
    free_port,
    registry,
    token_registry,
)
from tests.tooling import require_tool

# Never read the developer's own auth files.
NO_AUTH_FILES = RegistryOptions(auth_files=())


@pytest.fixture(scope="module")
def source(base_layout: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[ContentStore, Descriptor]:
    """The multi-arch busybox image (OCI index, amd64 + arm64) in a content store."""
    from pybuild.transports.oci_layout import read_oci_layout

    store = ContentStore(tmp_path_factory.mktemp("src") / "content")
    return store, read_oci_layout(base_layout, store, None)


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, source: tuple[ContentStore, Descriptor]  # noqa: F811
           ) -> str:
    store, desc = source
    ref = registry.ref("pybuild/busybox:multi")
    assert push_sync(store, desc, ref, options=NO_AUTH_FILES) == desc.digest
    return ref


def skopeo(*args: str) -> str:
    proc = subprocess.run([require_tool("skopeo"), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def digests_of(store: ContentStore, desc: Descriptor) -> set[Digest]:
    blobs, manifests = image_parts(store, desc)
    return {b.digest for b in blobs} | {m.digest for m, _ in manifests}


def assert_complete(store: ContentStore, desc: Descriptor) -> set[Digest]:
    """Every blob of the image is in `store` and hashes to its digest."""
    found = digests_of(store, desc)
    for digest in found:
        store.verify(digest)
    return found


def test_skopeo_reads_the_pushed_index(pushed: str,
                                       source: tuple[ContentStore, Descriptor]) -> None:
    store, desc = source
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed}")
    assert raw.encode() == store.read(desc.digest)
    index = Index.parse(store.read(desc.digest))
    [arm] = [d for d in index.manifests if d.platform and d.platform.architecture == "arm64"]
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--override-os", "linux",
                             "--override-arch", "arm64", f"docker://{pushed}"))
    assert info["Architecture"] == "arm64"
    assert info["Digest"] == desc.digest  # skopeo reports the digest of what the tag names
    arm_manifest = Manifest.parse(store.read(arm.digest))
    assert info["Layers"] == [layer.digest for layer in arm_manifest.layers]


def test_resolve_returns_the_index(pushed: str,
                                   source: tuple[ContentStore, Descriptor]) -> None:
    store, desc = source
    top, data = resolve_sync(pushed, options=NO_AUTH_FILES)
    assert top == Descriptor(media_type=mt.OCI_INDEX, digest=desc.digest, size=desc.size)
    assert data == store.read(desc.digest)
    by_digest, _ = resolve_sync(pushed.split(":multi")[0] + "@" + desc.digest,
                                options=NO_AUTH_FILES)
    assert by_digest == top


def test_pull_back_every_platform(pushed: str, source: tuple[ContentStore, Descriptor],
                                  tmp_path: Path) -> None:
    src, desc = source
    store = ContentStore(tmp_path / "content")
    events: list[TransferEvent] = []
    top = pull_sync(pushed, store, options=NO_AUTH_FILES, progress=events.append)
    assert top == Descriptor(media_type=mt.OCI_INDEX, digest=desc.digest, size=desc.size)
    assert assert_complete(store, top) == digests_of(src, desc)
    assert set(store.digests()) == digests_of(src, desc)
    assert {e.action for e in events} == {"pull", "manifest"}
    # pulling again downloads nothing
    events.clear()
    pull_sync(pushed, store, options=NO_AUTH_FILES, progress=events.append)
    assert "pull" not in {e.action for e in events}


def test_pull_one_platform(pushed: str, source: tuple[ContentStore, Descriptor],
                           tmp_path: Path) -> None:
    src, desc = source
    store = ContentStore(tmp_path / "content")
    pull_sync(pushed, store, platforms=[Platform.parse("linux/arm64")], options=NO_AUTH_FILES)
    index = Index.parse(src.read(desc.digest))
    [arm] = [d for d in index.manifests if d.platform and d.platform.architecture == "arm64"]
    assert set(store.digests()) == digests_of(src, arm) | {desc.digest}
    with pytest.raises(RegistryNotFoundError, match="no image for platform linux/s390x"):
        pull_sync(pushed, store, platforms=[Platform.parse("linux/s390x")],
                  options=NO_AUTH_FILES)


def test_second_push_skips_blobs_and_mount_from_another_repo(
        pushed: str, registry: RunningRegistry,  # noqa: F811
        source: tuple[ContentStore, Descriptor]) -> None:
    store, desc = source
    events: list[TransferEvent] = []
    push_sync(store, desc, pushed, options=NO_AUTH_FILES, progress=events.append)
    assert {e.action for e in events} == {"exists", "manifest"}
    events.clear()
    push_sync(store, desc, registry.ref("pybuild/mounted:v1"), options=NO_AUTH_FILES,
              mount_from=["pybuild/busybox"], progress=events.append)
    assert {e.action for e in events} == {"mount", "manifest"}
    raw = skopeo("inspect", "--raw", "--tls-verify=false",
                 f"docker://{registry.ref('pybuild/mounted:v1')}")
    assert raw.encode() == store.read(desc.digest)


def test_chunked_upload_follows_location(registry: RunningRegistry,  # noqa: F811
                                         source: tuple[ContentStore, Descriptor],
                                         tmp_path: Path) -> None:
    store, desc = source
    options = RegistryOptions(auth_files=(), chunk_size=64 << 10, max_transfers=2)
    ref = registry.ref("pybuild/chunked:v1")
    events: list[TransferEvent] = []
    push_sync(store, desc, ref, options=options, progress=events.append)
    pushed_sizes = [e.size for e in events if e.action == "push"]
    assert max(pushed_sizes) > 3 * (64 << 10)  # at least one blob went in several PATCHes
    fresh = ContentStore(tmp_path / "content")
    pull_sync(ref, fresh, options=NO_AUTH_FILES)
    assert assert_complete(fresh, desc) == digests_of(store, desc)


def _docker_copy(store: ContentStore, desc: Descriptor) -> Descriptor:
    """The same image as a Docker manifest list of Docker schema 2 manifests."""
    index = Index.parse(store.read(desc.digest))
    children = []
    for child in index.manifests:
        m = Manifest.parse(store.read(child.digest))
        docker = Manifest(
            media_type=mt.DOCKER_MANIFEST,
            config=Descriptor(media_type=mt.DOCKER_CONFIG, digest=m.config.digest,
                              size=m.config.size),
            layers=tuple(Descriptor(media_type=mt.to_docker(layer.media_type),
                                    digest=layer.digest, size=layer.size)
                         for layer in m.layers))
        data = docker.encode()
        store.write(data)
        children.append(Descriptor(media_type=mt.DOCKER_MANIFEST,
                                   digest=Digest.from_bytes(data), size=len(data),
                                   platform=child.platform))
    data = canonical_json(Index(media_type=mt.DOCKER_MANIFEST_LIST,
                                manifests=tuple(children)).to_json())
    store.write(data)
    return Descriptor(media_type=mt.DOCKER_MANIFEST_LIST, digest=Digest.from_bytes(data),
                      size=len(data))


def test_docker_manifest_list_round_trip(registry: RunningRegistry,  # noqa: F811
                                         source: tuple[ContentStore, Descriptor],
                                         tmp_path: Path) -> None:
    store, desc = source
    docker = _docker_copy(store, desc)
    ref = registry.ref("pybuild/dockerlist:v1")
    push_sync(store, docker, ref, options=NO_AUTH_FILES)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw.encode() == store.read(docker.digest)
    fresh = ContentStore(tmp_path / "content")
    top = pull_sync(ref, fresh, options=NO_AUTH_FILES)
    assert top.media_type == mt.DOCKER_MANIFEST_LIST and top.digest == docker.digest
    assert_complete(fresh, top)


def test_pull_what_skopeo_pushed(registry: RunningRegistry,  # noqa: F811
                                 base_layout: Path, tmp_path: Path) -> None:
    ref = registry.ref("skopeo/busybox:latest")
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{base_layout}:latest",
           f"docker://{ref}")
    remote = Digest.from_bytes(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").encode())
    store = ContentStore(tmp_path / "content")
    top = pull_sync(ref, store, options=NO_AUTH_FILES)
    assert top.digest == remote
    found = assert_complete(store, top)
    assert len(found) == 7  # index, 2 manifests, 2 configs, 2 layers


def test_missing_tag_and_repository(registry: RunningRegistry,  # noqa: F811
                                    tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    with pytest.raises(RegistryNotFoundError) as err:
        pull_sync(registry.ref("pybuild/busybox:no-such-tag"), store, options=NO_AUTH_FILES)
    message = str(err.value)
    assert "not found" in message and "no-such-tag" in message
    assert registry.host in message and "pybuild/busybox" in message
    with pytest.raises(RegistryNotFoundError, match="not found"):
        resolve_sync(registry.ref("nobody/here:latest"), options=NO_AUTH_FILES)


def test_manifest_blob_unknown_names_the_blob(registry: RunningRegistry,  # noqa: F811
                                              source: tuple[ContentStore, Descriptor]) -> None:
    """A manifest PUT before its blobs: the registry's MANIFEST_BLOB_UNKNOWN, typed."""
    store, desc = source
    child = Index.parse(store.read(desc.digest)).manifests[0]
    body = store.read(child.digest)
    manifest = Manifest.parse(body)
    missing = {str(manifest.config.digest), *(str(layer.digest) for layer in manifest.layers)}

    async def put_manifest_only() -> None:
        async with RegistryClient(registry.host, NO_AUTH_FILES) as client:
            await _Pusher(client, "pybuild/empty", store, (), None).manifest(child, body, "v1")

    with pytest.raises(ManifestBlobUnknownError) as err:
        run_sync(put_manifest_only())
    assert "pybuild/empty" in str(err.value) and registry.host in str(err.value)
    assert err.value.digest == child.digest
    assert any(d in str(err.value) for d in missing)


def test_connection_refused(tmp_path: Path) -> None:
    ref = f"127.0.0.1:{free_port()}/pybuild/busybox:latest"
    with pytest.raises(RegistryUnreachableError, match="connection refused"):
        resolve_sync(ref, options=NO_AUTH_FILES)


# --- TLS + htpasswd ------------------------------------------------------------------------


def _creds(reg: RunningRegistry) -> str:
    return f"{reg.username}:{reg.password}"


def test_push_and_pull_with_basic_auth_over_tls(auth_registry: RunningRegistry,  # noqa: F811
                                                source: tuple[ContentStore, Descriptor],
                                                tmp_path: Path) -> None:
    store, desc = source
    ref = auth_registry.ref("pybuild/busybox:multi")
    options = RegistryOptions(auth_files=(), creds=_creds(auth_registry),
                              ca_cert=auth_registry.ca_cert)
    assert push_sync(store, desc, ref, options=options) == desc.digest
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", _creds(auth_registry),
                 f"docker://{ref}")
    assert raw.encode() == store.read(desc.digest)
    fresh = ContentStore(tmp_path / "content")
    pull_sync(ref, fresh, options=options)
    assert assert_complete(fresh, desc) == digests_of(store, desc)


@pytest.fixture
def auth_file(auth_registry: RunningRegistry, tmp_path: Path,  # noqa: F811
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "auth.json"
    token = base64.b64encode(_creds(auth_registry).encode()).decode()
    path.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    yield path


def test_credentials_from_the_auth_file(auth_registry: RunningRegistry,  # noqa: F811
                                        source: tuple[ContentStore, Descriptor],
                                        auth_file: Path) -> None:
    store, desc = source
    ref = auth_registry.ref("pybuild/fromfile:v1")
    push_sync(store, desc, ref, options=RegistryOptions(ca_cert=auth_registry.ca_cert))
    top, _ = resolve_sync(ref, options=RegistryOptions(ca_cert=auth_registry.ca_cert))
    assert top.digest == desc.digest


def test_wrong_or_missing_credentials(auth_registry: RunningRegistry,  # noqa: F811
                                      source: tuple[ContentStore, Descriptor]) -> None:
    store, desc = source
    ref = auth_registry.ref("pybuild/denied:v1")
    wrong = RegistryOptions(auth_files=(), creds="pyuser:not-the-password",
                            ca_cert=auth_registry.ca_cert)
    with pytest.raises(RegistryAuthError) as err:
        push_sync(store, desc, ref, options=wrong)
    text = f"{err.value}\n{err.value.hint}"
    assert "authentication denied" in text and auth_registry.host in text
    assert "not-the-password" not in text and "\n" not in str(err.value)
    assert err.value.code == "registry-auth"
    none = RegistryOptions(auth_files=(), ca_cert=auth_registry.ca_cert)
    with pytest.raises(RegistryAuthError, match="authentication required for"):
        resolve_sync(ref, options=none)


def test_untrusted_certificate(auth_registry: RunningRegistry,  # noqa: F811
                               source: tuple[ContentStore, Descriptor],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    store, desc = source
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ref = auth_registry.ref("pybuild/busybox:multi")
    with pytest.raises(RegistryTLSError) as err:
        resolve_sync(ref, options=RegistryOptions(auth_files=(), creds=_creds(auth_registry)))
    assert "TLS verification failed" in str(err.value)
    assert "--insecure" in (err.value.hint or "") and "CA file" in (err.value.hint or "")
    # --insecure skips verification; $SSL_CERT_FILE trusts the CA like a CA file does
    options = RegistryOptions(auth_files=(), creds=_creds(auth_registry), insecure=True)
    push_sync(store, desc, ref, options=options)
    monkeypatch.setenv("SSL_CERT_FILE", str(auth_registry.ca_cert))
    top, _ = resolve_sync(ref, options=RegistryOptions(auth_files=(),
                                                       creds=_creds(auth_registry)))
    assert top.digest == desc.digest


def test_unresolvable_registry_is_a_registry_error() -> None:
    with pytest.raises(RegistryUnreachableError, match=r"https://registry.invalid"):
        resolve_sync("registry.invalid/pybuild/x:1", options=RegistryOptions(
            auth_files=(), timeout=5))


# --- Bearer tokens (distribution's token auth, with a token service the fixture runs) ------


def test_bearer_token_push_and_anonymous_pull(token_registry: RunningRegistry,  # noqa: F811
                                              source: tuple[ContentStore, Descriptor],
                                              tmp_path: Path) -> None:
    store, desc = source
    service = token_registry.token_service
    assert service is not None
    ref = token_registry.ref("pybuild/bearer:v1")
    creds = RegistryOptions(auth_files=(), creds=_creds(token_registry))
    assert push_sync(store, desc, ref, options=creds) == desc.digest
    accounts = {(r.account, r.user) for r in service.requests}
    assert accounts == {(token_registry.username, token_registry.username)}
    assert any("repository:pybuild/bearer:pull,push" in r.scopes for r in service.requests)
    pushed_tokens = len(service.requests)
    assert pushed_tokens <= 3  # one token per scope, cached, not one per request
    # anonymous clients get pull-only tokens
    fresh = ContentStore(tmp_path / "content")
    pull_sync(ref, fresh, options=NO_AUTH_FILES)
    assert assert_complete(fresh, desc) == digests_of(store, desc)
    with pytest.raises(RegistryAuthError, match="authentication required for"):
        push_sync(store, desc, token_registry.ref("pybuild/bearer:anon"), options=NO_AUTH_FILES)
    wrong = RegistryOptions(auth_files=(), creds=f"{token_registry.username}:wrong")
    with pytest.raises(RegistryAuthError, match="authentication denied") as err:
        resolve_sync(ref, options=wrong)
    assert ":wrong" not in f"{err.value} {err.value.hint}"

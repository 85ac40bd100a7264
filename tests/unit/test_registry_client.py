"""Registry client without a network: URLs and Location handling, the Bearer token flow and
error mapping over httpx.MockTransport, media types, platform selection."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index
from pybuild.oci.platform import Platform
from pybuild.registry import run_sync
from pybuild.registry.client import (
    RegistryClient,
    RegistryOptions,
    api_host,
    is_loopback,
    resolve_location,
    with_digest,
)
from pybuild.registry.errors import (
    ManifestBlobUnknownError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
)
from pybuild.registry.pull import fetch_manifest, manifest_media_type, select_children
from pybuild.registry.push import _range_end

DIGEST = Digest.from_bytes(b"x")


def test_api_host_and_loopback() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("quay.io") == "quay.io"
    for host in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000",
                 "::1", "foo.localhost:80"):
        assert is_loopback(host), host
    for host in ("registry-1.docker.io", "10.0.0.1:5000", "example.com:443", "[2001:db8::1]"):
        assert not is_loopback(host), host


def test_location_absolute_relative_and_digest_param() -> None:
    req = httpx.URL("http://127.0.0.1:5000/v2/a/b/blobs/uploads/")
    absolute = "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u-1?_state=abc%3D%3D"
    assert resolve_location(req, absolute) == httpx.URL(absolute)
    rel = resolve_location(req, "/v2/a/b/blobs/uploads/u-2?_state=xyz")
    assert str(rel) == "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u-2?_state=xyz"
    final = with_digest(httpx.URL(absolute), DIGEST)
    assert final.params["_state"] == "abc=="
    assert final.params["digest"] == DIGEST
    assert str(final).startswith(absolute + "&digest=sha256%3A")
    bare = with_digest(httpx.URL("https://r.io/v2/x/blobs/uploads/u"), DIGEST)
    assert str(bare) == f"https://r.io/v2/x/blobs/uploads/u?digest=sha256%3A{DIGEST.hex}"
    with pytest.raises(RegistryError):
        resolve_location(req, "")


def test_range_header() -> None:
    assert _range_end("0-1023") == 1023
    assert _range_end("bytes=0-9") == 9
    assert _range_end("") is None
    assert _range_end("0-x") is None


def test_manifest_media_type() -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()
    assert manifest_media_type(mt.OCI_INDEX, index, where="m") == mt.OCI_INDEX
    assert manifest_media_type("application/json", index, where="m") == mt.OCI_INDEX
    bare = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    assert manifest_media_type(mt.DOCKER_MANIFEST, bare, where="m") == mt.DOCKER_MANIFEST
    assert manifest_media_type("", bare, where="m") == mt.OCI_MANIFEST
    with pytest.raises(RegistryError, match="sent a"):
        manifest_media_type(mt.DOCKER_MANIFEST_LIST, index, where="m")
    with pytest.raises(RegistryError, match="schema 1"):
        manifest_media_type("application/vnd.docker.distribution.manifest.v1+prettyjws",
                            b'{"schemaVersion": 1}', where="m")


def _entry(arch: str, variant: str = "") -> Descriptor:
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(arch.encode()),
                      size=1, platform=Platform(architecture=arch, variant=variant))


def test_select_children() -> None:
    amd, arm = _entry("amd64"), _entry("arm64", "v8")
    attest = Descriptor(media_type=mt.OCI_MANIFEST, digest=DIGEST, size=1,
                        platform=Platform(os="unknown", architecture="unknown"))
    index = Index(manifests=(amd, arm, attest))
    assert select_children(index, None, where="i") == [amd, arm, attest]
    assert select_children(index, [Platform.parse("linux/arm64")], where="i") == [arm]
    both = [Platform.parse("linux/arm64"), Platform.parse("linux/amd64")]
    assert select_children(index, both, where="i") == [arm, amd]
    with pytest.raises(RegistryNotFoundError, match=r"no image for platform linux/s390x \(it has"):
        select_children(index, [Platform.parse("linux/s390x")], where="i")


# --- over a mock transport ----------------------------------------------------------------

INDEX = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()
INDEX_DIGEST = Digest.from_bytes(INDEX)


class FakeRegistry:
    """A Bearer-token registry at https://reg.example and its token service."""

    def __init__(self, *, user: str = "", password: str = "") -> None:
        self.token_requests: list[httpx.Request] = []
        self.user, self.password = user, password
        self.digest_header = str(INDEX_DIGEST)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            self.token_requests.append(request)
            if self.user:
                want = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()
                                                   ).decode()
                if request.headers.get("Authorization") != want:
                    return httpx.Response(401, json={"details": "bad creds"})
            scope = request.url.params.get("scope", "")
            return httpx.Response(200, json={"token": f"tok:{scope}", "expires_in": 300})
        path = request.url.path
        scope = "repository:lib/app:pull"
        if request.headers.get("Authorization") != f"Bearer tok:{scope}":
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://auth.example/token",service="reg.example",'
                f'scope="{scope}"')}, json={"errors": [{"code": "UNAUTHORIZED"}]})
        if path in ("/v2/lib/app/manifests/latest", f"/v2/lib/app/manifests/{DIGEST}"):
            return httpx.Response(200, content=INDEX, headers={
                "Content-Type": mt.OCI_INDEX, "Docker-Content-Digest": self.digest_header})
        if path == "/v2/lib/app/manifests/push":
            return httpx.Response(400, json={"errors": [{
                "code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry",
                "detail": str(DIGEST)}]})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN",
                                                     "message": "manifest unknown"}]})


async def _fetch(fake: FakeRegistry, reference: str, **opts: object) -> Descriptor:
    options = RegistryOptions(auth_files=(), **opts)  # type: ignore[arg-type]
    async with RegistryClient("reg.example", options,
                              transport=httpx.MockTransport(fake)) as client:
        desc, data = await fetch_manifest(client, "lib/app", reference)
        assert data == INDEX
        desc2, _ = await fetch_manifest(client, "lib/app", reference)
        assert desc2 == desc
        return desc


def test_bearer_flow_anonymous_caches_the_token() -> None:
    fake = FakeRegistry()
    desc = asyncio.run(_fetch(fake, "latest"))
    assert desc == Descriptor(media_type=mt.OCI_INDEX, digest=INDEX_DIGEST, size=len(INDEX))
    assert len(fake.token_requests) == 1  # the second fetch reused the cached token
    params = fake.token_requests[0].url.params
    assert params["service"] == "reg.example"
    assert params.get_list("scope") == ["repository:lib/app:pull"]
    assert "Authorization" not in fake.token_requests[0].headers


def test_bearer_flow_with_basic_creds_for_the_token() -> None:
    fake = FakeRegistry(user="u", password="s3cret")
    asyncio.run(_fetch(fake, "latest", creds="u:s3cret"))
    assert fake.token_requests[0].url.params["account"] == "u"


def test_bearer_wrong_creds_is_an_auth_error_without_the_secret() -> None:
    fake = FakeRegistry(user="u", password="s3cret")
    with pytest.raises(RegistryAuthError) as err:
        asyncio.run(_fetch(fake, "latest", creds="u:wrong-pw"))
    text = f"{err.value} {err.value.hint}"
    assert "authentication denied for reg.example/lib/app" in text
    assert "wrong-pw" not in text and "--creds" in text


def test_digest_header_mismatch_is_an_integrity_error() -> None:
    fake = FakeRegistry()
    fake.digest_header = str(DIGEST)
    with pytest.raises(IntegrityError, match="Docker-Content-Digest"):
        asyncio.run(_fetch(fake, "latest"))
    with pytest.raises(IntegrityError, match="hashes to"):
        asyncio.run(_fetch(FakeRegistry(), str(DIGEST)))


def test_error_mapping() -> None:
    with pytest.raises(RegistryNotFoundError) as err:
        asyncio.run(_fetch(FakeRegistry(), "missing"))
    assert isinstance(err.value, NotFoundError)
    assert "tag 'missing' not found in reg.example/lib/app" in str(err.value)
    assert err.value.registry == "reg.example" and err.value.repository == "lib/app"
    with pytest.raises(ManifestBlobUnknownError, match=f"references blob {DIGEST}"):
        asyncio.run(_fetch(FakeRegistry(), "push"))


def test_plain_http_token_realm_is_refused_for_remote_registries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={
            "WWW-Authenticate": 'Bearer realm="http://auth.example/token",service="s"'})

    async def go() -> None:
        async with RegistryClient("reg.example", RegistryOptions(auth_files=()),
                                  transport=httpx.MockTransport(handler)) as client:
            await fetch_manifest(client, "lib/app", "latest")

    with pytest.raises(RegistryError, match="not HTTPS"):
        asyncio.run(go())


def test_connection_refused_is_a_registry_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async def go() -> None:
        async with RegistryClient("reg.example", RegistryOptions(auth_files=()),
                                  transport=httpx.MockTransport(handler)) as client:
            await fetch_manifest(client, "lib/app", "latest")

    with pytest.raises(RegistryError, match=r"cannot connect to registry https://reg.example"):
        asyncio.run(go())


def test_run_sync_inside_a_running_loop() -> None:
    async def value() -> int:
        return 42

    async def outer() -> int:
        return run_sync(value())

    assert run_sync(value()) == 42
    assert asyncio.run(outer()) == 42


def test_transient_statuses_are_retried_and_uploads_are_not() -> None:
    from pybuild.registry.options import RetryPolicy

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) < 3:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(200)

    async def run(method: str, retry: bool) -> int:
        options = RegistryOptions(auth_files=(), retry=RetryPolicy(attempts=4, base_delay=0))
        async with RegistryClient("reg.example", options,
                                  transport=httpx.MockTransport(handler)) as client:
            resp = await client.request(method, "https://reg.example/v2/x", repository="x",
                                        retry=retry)
            return resp.status_code

    assert asyncio.run(run("GET", True)) == 200 and seen == ["GET"] * 3
    seen.clear()
    with pytest.raises(RegistryError) as err:
        asyncio.run(run("PATCH", False))
    assert seen == ["PATCH"] and err.value.transient and "503" in str(err.value)


def test_cli_retry_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from pybuild.cli.registry_commands import registry_options
    from pybuild.errors import UserError

    args = argparse.Namespace(root="/tmp/pb-root")
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRIES", "2")
    monkeypatch.setenv("PYBUILD_REGISTRY_TIMEOUT", "7.5")
    options = registry_options(args)
    assert options.retry.attempts == 3 and options.timeout == 7.5
    assert str(options.blob_index) == "/tmp/pb-root/cache/blob-sources.db"
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRIES", "many")
    with pytest.raises(UserError, match=r"PYBUILD_REGISTRY_RETRIES='many'"):
        registry_options(args)

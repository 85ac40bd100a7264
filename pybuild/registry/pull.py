"""Resolve and pull images: manifests, indexes, configs and layers into the content store.

Everything fetched is checked before it is published: a manifest's bytes against the digest
the caller asked for (or the `Docker-Content-Digest` the registry claims) and the size and
digest of its descriptor; a blob while it streams (size) and at commit (digest). The store
gets children before parents, so it never holds a manifest whose blobs are missing because of
this pull.

A blob download that breaks (a reset, a stall past the timeout, a body that ends early) goes
on from where it stopped with `Range: bytes=<offset>-` when the registry answers 206, and
starts over when it does not; the whole blob's digest is checked at the end either way, and
nothing unverified is ever published. Pulls try the reference's mirrors first
(`endpoints.py`); a mirror that fails in any way but integrity hands over to the next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from pybuild.content.store import ContentStore
from pybuild.digest import Digest, is_digest
from pybuild.errors import IntegrityError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference
from pybuild.registry.auth import repository_scope
from pybuild.registry.blobindex import open_index
from pybuild.registry.client import RegistryClient
from pybuild.registry.endpoints import Endpoint, pull_endpoints
from pybuild.registry.errors import RegistryError, RegistryNotFoundError
from pybuild.registry.options import RegistryOptions
from pybuild.registry.retry import describe_transport_error, gave_up

T = TypeVar("T")
MAX_MANIFEST_SIZE = 4 << 20  # distribution refuses bigger manifests too
SCHEMA1_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
})


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferEvent:
    """One finished step of a pull or push, for progress display.

    action: "pull" (downloaded), "push" (uploaded), "exists" (already there, skipped),
    "mount" (cross-repository mount), "manifest" (a manifest or index was stored or put).
    """

    action: str
    digest: Digest
    size: int
    media_type: str


ProgressCallback = Callable[[TransferEvent], None]


async def run_all(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that error itself
    (not an ExceptionGroup, so the CLI renders it as the user error it is)."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as group_error:
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


def as_reference(ref: Reference | str) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


def _is_index(media_type: str) -> bool:
    return media_type in mt.INDEX_TYPES


def _is_manifest(media_type: str) -> bool:
    return media_type in mt.MANIFEST_TYPES


def _body_media_type(data: bytes, *, sniff: bool = True) -> str:
    """The body's `mediaType`; with `sniff`, else the type its JSON shape implies."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(raw, dict):
        return ""
    value = raw.get("mediaType")
    if isinstance(value, str) and value:
        return value
    if raw.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    if not sniff:
        return ""
    if "manifests" in raw:
        return mt.OCI_INDEX
    if "config" in raw and "layers" in raw:
        return mt.OCI_MANIFEST
    return ""


def manifest_media_type(content_type: str, data: bytes, *, where: str) -> str:
    """The media type of a fetched manifest: the body's `mediaType`, else the Content-Type,
    else the shape of its JSON. A body that contradicts its Content-Type is refused."""
    header = content_type.split(";", 1)[0].strip().lower()
    body = _body_media_type(data, sniff=False)
    known = mt.INDEX_TYPES | mt.MANIFEST_TYPES
    if body in SCHEMA1_TYPES or header in SCHEMA1_TYPES:
        raise schema1_error(where)
    if body and header in known and body != header:
        raise RegistryError(f"{where}: the registry sent a {body} body as {header}",
                            code="registry-bad-manifest")
    media_type = body or (header if header in known else _body_media_type(data))
    if media_type not in known:
        raise RegistryError(
            f"{where} is not an image manifest or index "
            f"(media type {media_type or header or 'unknown'})",
            code="registry-unsupported-manifest")
    return media_type


def schema1_error(where: str) -> RegistryError:
    return RegistryError(
        f"{where} is a Docker schema 1 manifest (deprecated since 2017, removed from Docker "
        "and containerd); pybuild does not pull schema 1 images",
        code="registry-unsupported-manifest",
        hint="push the image again with a current tool (docker, buildx, skopeo copy "
             "--format v2s2 or oci) to get a schema 2 or OCI manifest")


async def fetch_manifest(
    client: RegistryClient,
    repository: str,
    reference: str,
    *,
    expected: Descriptor | None = None,
    head_only: bool = False,
) -> tuple[Descriptor, bytes]:
    """GET (or HEAD) `/v2/<repository>/manifests/<reference>` with the full Accept list.

    The digest is computed from the bytes and checked against the reference (when it is a
    digest), `Docker-Content-Digest`, and `expected` (digest and size). With `head_only` the
    descriptor comes from the headers alone and the bytes are empty.
    """
    where = f"manifest {client.domain}/{repository}" + (
        f"@{reference}" if is_digest(reference) else f":{reference}")
    url = await client.url(f"/v2/{repository}/manifests/{reference}")
    digest_hint = reference if is_digest(reference) else ""
    subject = f"manifest {reference}" if digest_hint else f"tag {reference!r}"
    scopes = (repository_scope(repository, "pull"),)
    if head_only:
        resp = await client.request(
            "HEAD", url, repository=repository, scopes=scopes,
            headers={"Accept": mt.ACCEPT_ALL}, what=subject, digest=digest_hint)
        header_digest = resp.headers.get("Docker-Content-Digest", "").strip()
        content_type = resp.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() in SCHEMA1_TYPES:
            raise schema1_error(where)
        if not is_digest(header_digest) and not digest_hint:
            raise RegistryError(f"{where}: the registry sent no Docker-Content-Digest",
                                registry=client.domain, repository=repository)
        size = int(resp.headers.get("Content-Length", "0") or 0)
        media_type = content_type.split(";", 1)[0].strip()
        return Descriptor(media_type=media_type, digest=Digest(header_digest or digest_hint),
                          size=size), b""
    resp, data = await client.request_bytes(
        "GET", url, repository=repository, scopes=scopes, limit=MAX_MANIFEST_SIZE,
        headers={"Accept": mt.ACCEPT_ALL}, what=subject, digest=digest_hint)
    header_digest = resp.headers.get("Docker-Content-Digest", "").strip()
    content_type = resp.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() in SCHEMA1_TYPES or \
            _body_media_type(data, sniff=False) in SCHEMA1_TYPES:
        # before any digest check: a signed schema 1 manifest's digest is not its bytes'
        raise schema1_error(where)
    digest = Digest.from_bytes(data)
    if digest_hint and digest != digest_hint:
        raise IntegrityError(f"{where}: the registry sent content that hashes to {digest}")
    if is_digest(header_digest) and header_digest.startswith("sha256:") and \
            header_digest != digest:
        raise IntegrityError(f"{where}: Docker-Content-Digest says {header_digest} but the "
                             f"content hashes to {digest}")
    if expected is not None:
        if expected.digest != digest:
            raise IntegrityError(f"{where}: content hashes to {digest}")
        if expected.size != len(data):
            raise IntegrityError(f"{where}: size mismatch (descriptor says {expected.size} "
                                 f"bytes, the registry sent {len(data)})")
    media_type = manifest_media_type(content_type, data, where=where)
    if expected is not None and expected.media_type and expected.media_type != media_type:
        raise RegistryError(f"{where}: the index calls it {expected.media_type} but it is a "
                            f"{media_type}", code="registry-bad-manifest")
    return Descriptor(media_type=media_type, digest=digest, size=len(data)), data


def select_children(index: Index, platforms: Sequence[Platform] | None, *,
                    where: str) -> list[Descriptor]:
    """The index entries a pull for `platforms` needs (every entry when None)."""
    if platforms is None:
        return list(index.manifests)
    chosen: list[Descriptor] = []
    for platform in platforms:
        match = next((d for d in index.manifests if _is_manifest(d.media_type)
                      and d.platform is not None and platform.matches(d.platform)), None)
        if match is None:
            # nested indexes may still offer it
            nested = [d for d in index.manifests if _is_index(d.media_type)]
            if nested:
                chosen.extend(d for d in nested if d not in chosen)
                continue
            offered = ", ".join(str(d.platform) for d in index.manifests
                                if d.platform is not None) or "none"
            raise RegistryNotFoundError(
                f"{where} has no image for platform {platform} (it has: {offered})")
        if match not in chosen:
            chosen.append(match)
    return chosen


def _is_foreign(desc: Descriptor) -> bool:
    return bool(desc.urls) or desc.media_type == mt.DOCKER_FOREIGN_LAYER_GZIP


class _Puller:
    def __init__(self, client: RegistryClient, repository: str, store: ContentStore,
                 progress: ProgressCallback | None) -> None:
        self.client = client
        self.repository = repository
        self.store = store
        self.progress = progress
        self.manifests: list[tuple[Descriptor, bytes]] = []  # children first
        self.blobs: dict[Digest, Descriptor] = {}

    def _emit(self, action: str, desc: Descriptor) -> None:
        if self.progress is not None:
            self.progress(TransferEvent(action=action, digest=desc.digest, size=desc.size,
                                        media_type=desc.media_type))

    async def walk(self, desc: Descriptor, data: bytes,
                   platforms: Sequence[Platform] | None) -> None:
        """Fetch every manifest below `desc` (concurrently); note the blobs they need."""
        where = f"{self.client.domain}/{self.repository}@{desc.digest}"
        if _is_index(desc.media_type):
            index = Index.parse(data, where=f"index {where}")
            children = select_children(index, platforms, where=f"image {where}")
            fetched = await run_all([self.child(c) for c in children])
            for child, (child_desc, child_data) in zip(children, fetched, strict=True):
                if child_data is None:
                    continue  # not a manifest/index: nothing to descend into
                await self.walk(child_desc, child_data,
                                platforms if _is_index(child.media_type) else None)
        elif _is_manifest(desc.media_type):
            manifest = Manifest.parse(data, where=f"manifest {where}")
            for blob in (manifest.config, *manifest.layers):
                if not _is_foreign(blob):
                    self.blobs.setdefault(blob.digest, blob)
        self.manifests.append((desc, data))

    async def child(self, desc: Descriptor) -> tuple[Descriptor, bytes | None]:
        if not (_is_index(desc.media_type) or _is_manifest(desc.media_type)):
            # an artifact the index lists (signature, attestation): fetch it as a blob
            self.blobs.setdefault(desc.digest, desc)
            return desc, None
        if self.store.has(desc.digest):
            data = self.store.read(desc.digest, what="manifest")
            if len(data) == desc.size:
                return desc, data
        return await fetch_manifest(self.client, self.repository, desc.digest, expected=desc)

    async def blob(self, desc: Descriptor) -> None:
        if self.store.has(desc.digest):
            if self.store.size(desc.digest) != desc.size:
                raise IntegrityError(
                    f"blob {desc.digest}: the content store has {self.store.size(desc.digest)}"
                    f" bytes, the manifest says {desc.size}")
            self._emit("exists", desc)
            return
        async with self.client.transfers:
            await download_blob(self.client, self.repository, desc, self.store)
        self._emit("pull", desc)

    def publish(self) -> None:
        for desc, data in self.manifests:
            if not self.store.has(desc.digest):
                self.store.write(data, expected=desc.digest)
            self._emit("manifest", desc)


async def download_blob(client: RegistryClient, repository: str, desc: Descriptor,
                        store: ContentStore) -> None:
    """Fetch one blob into the store, verified: resumed with a Range request after a broken
    transfer (when the registry answers 206), restarted from zero otherwise, at most
    `retry.attempts` tries; the digest and size of the whole blob are checked at commit."""
    where = f"blob {client.domain}/{repository}@{desc.digest}"
    url = await client.url(f"/v2/{repository}/blobs/{desc.digest}")
    policy = client.options.retry
    failures = 0
    writer = store.writer()
    try:
        while True:
            headers = {"Accept-Encoding": "identity"}
            if writer.size:
                headers["Range"] = f"bytes={writer.size}-"
            resp = await client.request(
                "GET", url, repository=repository, scopes=(repository_scope(repository, "pull"),),
                headers=headers, stream=True, follow_redirects=True, ok=(200, 206),
                what=f"blob {desc.digest} ({desc.media_type})", digest=desc.digest)
            if writer.size and not _resumes_at(resp, writer.size):
                writer.abort()  # a full body (200) or another range: start over
                writer = store.writer()
            broken = ""
            try:
                # as the bytes come (a size here would buffer them, and a break lose them)
                async for chunk in resp.aiter_bytes():
                    if writer.size + len(chunk) > desc.size:
                        raise IntegrityError(f"{where}: the registry sent more than the "
                                             f"{desc.size} bytes the manifest declares")
                    writer.write(chunk)
            except (httpx.HTTPError, ssl.SSLError) as exc:
                broken = describe_transport_error(exc, client.options.timeout)
            finally:
                await resp.aclose()
            if not broken and writer.size == desc.size:
                break
            if not broken:
                broken = f"the body ended after {writer.size} of {desc.size} bytes"
            failures += 1
            if failures >= policy.attempts:
                raise RegistryError(
                    f"{where}: download interrupted after {writer.size} of {desc.size} bytes:"
                    f" {broken}{gave_up(failures)}", registry=client.domain,
                    repository=repository, digest=desc.digest, transient=True)
            await asyncio.sleep(policy.delay(failures))
        try:
            await asyncio.to_thread(writer.commit, desc.digest, desc.size)
        except IntegrityError as exc:
            raise IntegrityError(f"{where}: the registry sent bytes that do not match the "
                                 f"manifest, refused: {exc.message}") from None
    finally:
        writer.abort()  # a no-op once committed


def _resumes_at(resp: httpx.Response, offset: int) -> bool:
    """A 206 whose Content-Range starts where the partial download ends."""
    if resp.status_code != 206:
        return False
    value = resp.headers.get("Content-Range", "").strip()  # "bytes 100-199/200"
    unit, _, rest = value.partition(" ")
    start, _, _ = rest.partition("-")
    return unit == "bytes" and start.isdigit() and int(start) == offset


def endpoint_options(options: RegistryOptions | None, logical: Reference,
                     endpoint: Endpoint) -> RegistryOptions:
    """The options for one endpoint: its own insecure flag; explicit --creds only for the
    reference's own registry (never sent to a mirror elsewhere)."""
    base = options or RegistryOptions()
    creds = base.creds if endpoint.reference.domain == logical.domain else None
    return dataclasses.replace(base, insecure=base.insecure or endpoint.insecure, creds=creds)


async def over_endpoints(ref: Reference, options: RegistryOptions | None,
                         attempt: Callable[[RegistryClient, Reference], Awaitable[T]]) -> T:
    """Run `attempt` against each pull endpoint (mirrors first) until one succeeds. An
    integrity error is never passed over; when all fail, the origin's error is raised, with
    what the mirrors answered in front of it (as containers/image reports it)."""
    base = options or RegistryOptions()
    endpoints = pull_endpoints(ref, base.registries, base.mirrors)
    failed: list[tuple[Endpoint, RegistryError]] = []
    for endpoint in endpoints:
        async with RegistryClient(endpoint.reference.domain,
                                  endpoint_options(options, ref, endpoint)) as client:
            try:
                return await attempt(client, endpoint.reference)
            except IntegrityError:
                raise
            except RegistryError as exc:
                if len(endpoints) == 1:
                    raise
                failed.append((endpoint, exc))
    last = failed[-1][1]
    mirrors = "; ".join(f"[{e.reference.repository}: {x.message}]" for e, x in failed[:-1])
    if mirrors:
        last.message = f"{last.message} (mirrors also failed: {mirrors})"
    raise last


async def resolve(ref: Reference | str, *, options: RegistryOptions | None = None,
                  client: RegistryClient | None = None) -> tuple[Descriptor, bytes]:
    """The top manifest or index of `ref` (its descriptor, with the media type the registry
    reported and the digest of the bytes, and the bytes)."""
    reference = as_reference(ref)
    if client is not None:
        return await fetch_manifest(client, reference.path,
                                    reference.digest or reference.tag or "latest")

    async def attempt(own: RegistryClient, at: Reference) -> tuple[Descriptor, bytes]:
        return await fetch_manifest(own, at.path, at.digest or at.tag or "latest")

    return await over_endpoints(reference, options, attempt)


async def pull(
    ref: Reference | str,
    store: ContentStore,
    *,
    platforms: Sequence[Platform] | None = None,
    options: RegistryOptions | None = None,
    progress: ProgressCallback | None = None,
) -> Descriptor:
    """Pull `ref` into `store`: the manifest or index, and every manifest, config and layer
    the requested platforms need (all of them when `platforms` is None). Blobs already in
    the store are not downloaded again. Returns the top descriptor."""
    reference = as_reference(ref)

    async def attempt(client: RegistryClient, at: Reference) -> Descriptor:
        top, data = await resolve(at, client=client)
        puller = _Puller(client, at.path, store, progress)
        await puller.walk(top, data, platforms)
        blobs = list(puller.blobs.values())
        await run_all([puller.blob(b) for b in blobs])
        puller.publish()
        index = open_index(client.options.blob_index)
        if index is not None:  # where these blobs live, for cross-repository mounts
            await asyncio.to_thread(index.record, client.domain, at.path,
                                    [b.digest for b in blobs])
        return top

    return await over_endpoints(reference, options, attempt)


async def pull_blobs(ref: Reference | str, blobs: Sequence[Descriptor], store: ContentStore,
                     *, options: RegistryOptions | None = None) -> None:
    """Fetch these blobs of `ref`'s repository into `store` (verified; those already there
    are not downloaded again). For artifacts whose blobs are wanted one by one, such as a
    build cache's layers."""
    reference = as_reference(ref)

    async def attempt(client: RegistryClient, at: Reference) -> None:
        puller = _Puller(client, at.path, store, None)
        await run_all([puller.blob(b) for b in blobs])

    await over_endpoints(reference, options, attempt)

"""Resolve and pull images: manifests, indexes, configs and layers into the content store.

Everything fetched is checked before it is published: a manifest's bytes against the digest
the caller asked for (or the `Docker-Content-Digest` the registry claims) and the size and
digest of its descriptor; a blob while it streams (size) and at commit (digest). The store
gets children before parents, so it never holds a manifest whose blobs are missing because of
this pull.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
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
from pybuild.registry.client import RegistryClient, RegistryOptions
from pybuild.registry.errors import RegistryError, RegistryNotFoundError

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
        raise RegistryError(f"{where} is a Docker schema 1 manifest, which pybuild does not "
                            "support", code="registry-unsupported-manifest")
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


async def _read_limited(resp: httpx.Response, limit: int, *, where: str) -> bytes:
    buf = bytearray()
    try:
        async for chunk in resp.aiter_bytes():
            buf += chunk
            if len(buf) > limit:
                raise RegistryError(f"{where} is larger than {limit} bytes; refusing it",
                                    code="registry-bad-manifest")
    finally:
        await resp.aclose()
    return bytes(buf)


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
    resp = await client.request(
        "HEAD" if head_only else "GET", url, repository=repository,
        scopes=(repository_scope(repository, "pull"),),
        headers={"Accept": mt.ACCEPT_ALL}, stream=True, what=subject, digest=digest_hint)
    header_digest = resp.headers.get("Docker-Content-Digest", "").strip()
    content_type = resp.headers.get("Content-Type", "")
    if head_only:
        await resp.aclose()
        if not is_digest(header_digest) and not digest_hint:
            raise RegistryError(f"{where}: the registry sent no Docker-Content-Digest",
                                registry=client.domain, repository=repository)
        size = int(resp.headers.get("Content-Length", "0") or 0)
        media_type = content_type.split(";", 1)[0].strip()
        return Descriptor(media_type=media_type, digest=Digest(header_digest or digest_hint),
                          size=size), b""
    data = await _read_limited(resp, MAX_MANIFEST_SIZE, where=where)
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
        where = f"blob {self.client.domain}/{self.repository}@{desc.digest}"
        async with self.client.transfers:
            url = await self.client.url(f"/v2/{self.repository}/blobs/{desc.digest}")
            resp = await self.client.request(
                "GET", url, repository=self.repository,
                scopes=(repository_scope(self.repository, "pull"),),
                headers={"Accept-Encoding": "identity"}, stream=True, follow_redirects=True,
                what=f"blob {desc.digest} ({desc.media_type})", digest=desc.digest)
            with self.store.writer() as writer:
                try:
                    async for chunk in resp.aiter_bytes(1 << 20):
                        writer.write(chunk)
                        if writer.size > desc.size:
                            raise IntegrityError(f"{where}: the registry sent more than the "
                                                 f"{desc.size} bytes the manifest declares")
                except httpx.HTTPError as exc:
                    raise RegistryError(f"{where}: download interrupted ({exc})",
                                        registry=self.client.domain,
                                        repository=self.repository,
                                        digest=desc.digest) from None
                finally:
                    await resp.aclose()
                await asyncio.to_thread(writer.commit, desc.digest, desc.size)
        self._emit("pull", desc)

    def publish(self) -> None:
        for desc, data in self.manifests:
            if not self.store.has(desc.digest):
                self.store.write(data, expected=desc.digest)
            self._emit("manifest", desc)


async def resolve(ref: Reference | str, *, options: RegistryOptions | None = None,
                  client: RegistryClient | None = None) -> tuple[Descriptor, bytes]:
    """The top manifest or index of `ref` (its descriptor, with the media type the registry
    reported and the digest of the bytes, and the bytes)."""
    reference = as_reference(ref)
    if client is not None:
        return await fetch_manifest(client, reference.path,
                                    reference.digest or reference.tag or "latest")
    async with RegistryClient(reference.domain, options) as own:
        return await fetch_manifest(own, reference.path,
                                    reference.digest or reference.tag or "latest")


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
    async with RegistryClient(reference.domain, options) as client:
        top, data = await resolve(reference, client=client)
        puller = _Puller(client, reference.path, store, progress)
        await puller.walk(top, data, platforms)
        blobs = list(puller.blobs.values())
        await run_all([puller.blob(b) for b in blobs])
        puller.publish()
    return top


async def pull_blobs(ref: Reference | str, blobs: Sequence[Descriptor], store: ContentStore,
                     *, options: RegistryOptions | None = None) -> None:
    """Fetch these blobs of `ref`'s repository into `store` (verified; those already there
    are not downloaded again). For artifacts whose blobs are wanted one by one, such as a
    build cache's layers."""
    reference = as_reference(ref)
    async with RegistryClient(reference.domain, options) as client:
        puller = _Puller(client, reference.path, store, None)
        await run_all([puller.blob(b) for b in blobs])

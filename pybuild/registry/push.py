"""Push an image (single manifest or multi-platform index) from the content store.

Order, so the registry can check every reference as it arrives: blobs (configs, layers), then
child manifests by digest, then the top manifest/index by tag. A blob the repository already
has is skipped (HEAD); one that another repository of the same registry has can be mounted;
otherwise it is uploaded monolithically (POST, then PUT with the body) or, above
`chunk_size`, in PATCH chunks, always following the latest `Location` and tracking the offset
ourselves. Every blob is verified against its digest before it leaves the store.

Mount sources are the caller's `mount_from` plus what the blob index (`blobindex.py`) knows:
the repositories of the same registry a pull or an earlier push saw the blob in. An upload
that fails on a transient fault is started again from a fresh session (after checking that
the blob did not land after all): an interrupted PATCH or PUT leaves the old session in a
state the client cannot know.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import httpx

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.reference import Reference
from pybuild.registry.auth import repository_scope
from pybuild.registry.blobindex import BlobSources, open_index
from pybuild.registry.client import RegistryClient, resolve_location, with_digest
from pybuild.registry.endpoints import push_endpoint
from pybuild.registry.errors import RegistryAuthError, RegistryError
from pybuild.registry.options import RegistryOptions
from pybuild.registry.pull import (
    ProgressCallback,
    TransferEvent,
    _body_media_type,
    _is_foreign,
    _is_index,
    _is_manifest,
    as_reference,
    run_all,
)

_READ = 1 << 20


def image_parts(store: ContentStore, descriptor: Descriptor
                ) -> tuple[list[Descriptor], list[tuple[Descriptor, bytes]]]:
    """The blobs (configs, layers, artifacts) and manifests (children first, the top last)
    of an image in the store. A missing blob is an error, except a foreign layer's."""
    blobs: dict[Digest, Descriptor] = {}
    manifests: list[tuple[Descriptor, bytes]] = []
    seen: set[Digest] = set()

    def visit(desc: Descriptor, parent: str) -> None:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        if _is_index(desc.media_type) or _is_manifest(desc.media_type):
            data = store.read(desc.digest, what=f"manifest (referenced by {parent})")
            if len(data) != desc.size:
                raise IntegrityError(f"manifest {desc.digest}: size mismatch (descriptor "
                                     f"says {desc.size}, the store has {len(data)} bytes)")
            body_type = _body_media_type(data, sniff=False)
            if body_type and body_type != desc.media_type:
                raise UserError(
                    f"manifest {desc.digest} says mediaType {body_type} but is referenced as "
                    f"{desc.media_type}; a registry would refuse it", code="bad-manifest")
            if _is_index(desc.media_type):
                for child in Index.parse(data, where=f"index {desc.digest}").manifests:
                    visit(child, f"index {desc.digest}")
            else:
                manifest = Manifest.parse(data, where=f"manifest {desc.digest}")
                for blob in (manifest.config, *manifest.layers):
                    if blob.digest in blobs:
                        continue
                    if not store.has(blob.digest):
                        if _is_foreign(blob):
                            continue
                        raise NotFoundError(
                            f"blob {blob.digest} ({blob.media_type}, referenced by manifest "
                            f"{desc.digest}) is not in the content store")
                    blobs[blob.digest] = blob
            manifests.append((desc, data))
            return
        if not store.has(desc.digest):
            raise NotFoundError(f"blob {desc.digest} (referenced by {parent}) is not in the "
                                "content store")
        blobs.setdefault(desc.digest, desc)

    visit(descriptor, "the pushed image")
    return list(blobs.values()), manifests


async def _file_range(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(_READ, left))
            if not chunk:
                raise IntegrityError(f"blob {path.name}: shorter than expected while pushing")
            left -= len(chunk)
            yield chunk


def _verify_file(path: Path, desc: Descriptor) -> None:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            h.update(chunk)
            size += len(chunk)
    if size != desc.size:
        raise IntegrityError(f"blob {desc.digest}: size mismatch (descriptor says {desc.size} "
                             f"bytes, the content store has {size})")
    if "sha256:" + h.hexdigest() != desc.digest:
        raise IntegrityError(f"blob {desc.digest} in the content store is corrupt (content "
                             f"hashes to sha256:{h.hexdigest()})")


class _Pusher:
    def __init__(self, client: RegistryClient, repository: str, store: ContentStore,
                 mount_from: Sequence[str], progress: ProgressCallback | None,
                 index: BlobSources | None = None,
                 fetch: Callable[[Descriptor], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.fetch = fetch  # brings a blob missing from the store (imagetools copies)
        self.repository = repository
        self.store = store
        self.mount_from = [m for m in mount_from if m and m != repository]
        self.progress = progress
        self.push_scope = repository_scope(repository, "pull,push")
        self.index = index
        self.confirmed: list[Digest] = []  # blobs known to be in the repository now

    def _emit(self, action: str, desc: Descriptor) -> None:
        if self.progress is not None:
            self.progress(TransferEvent(action=action, digest=desc.digest, size=desc.size,
                                        media_type=desc.media_type))

    def _where(self, desc: Descriptor) -> str:
        return f"blob {desc.digest}"

    async def blob_exists(self, desc: Descriptor) -> bool:
        url = await self.client.url(f"/v2/{self.repository}/blobs/{desc.digest}")
        resp = await self.client.request(
            "HEAD", url, repository=self.repository, scopes=(self.push_scope,),
            ok=(200, 404), what=self._where(desc), digest=desc.digest)
        return resp.status_code == 200

    async def blob(self, desc: Descriptor) -> None:
        async with self.client.transfers:
            if await self.blob_exists(desc):
                self.confirmed.append(desc.digest)
                self._emit("exists", desc)
                return
            mounted, session = await self._mount(desc)
            if mounted:
                self.confirmed.append(desc.digest)
                self._emit("mount", desc)
                return
            if not self.store.has(desc.digest) and self.fetch is not None:
                await self.fetch(desc)  # imagetools: a blob of another registry's image
            path = self.store.blob_path(desc.digest)
            await asyncio.to_thread(_verify_file, path, desc)
            policy = self.client.options.retry
            failures = 0
            while True:
                try:
                    location = session or await self._start_upload(desc)
                    session = None  # a session is used once: a retry starts a fresh one
                    await self._upload(desc, path, location)
                    break
                except RegistryError as exc:
                    failures += 1
                    if not exc.transient or failures >= policy.attempts:
                        raise
                await asyncio.sleep(policy.delay(failures))
                if await self.blob_exists(desc):  # the broken PUT may have landed after all
                    break
            self.confirmed.append(desc.digest)
            self._emit("push", desc)

    async def _mount_sources(self, desc: Descriptor) -> list[str]:
        sources = list(self.mount_from)
        if self.index is not None:
            known = await asyncio.to_thread(self.index.repositories, self.client.domain,
                                            desc.digest, exclude=self.repository)
            sources += [r for r in known if r not in sources]
        return sources

    async def _mount(self, desc: Descriptor) -> tuple[bool, httpx.URL | None]:
        """Try a cross-repository mount from each known source: (True, None) when one
        worked; else (False, the upload session the last refusal opened, if any)."""
        session: httpx.URL | None = None
        for source in await self._mount_sources(desc):
            base = await self.client.url(f"/v2/{self.repository}/blobs/uploads/")
            url = base.copy_merge_params({"mount": str(desc.digest), "from": source})
            try:
                resp = await self.client.request(
                    "POST", url, repository=self.repository,
                    scopes=(self.push_scope, repository_scope(source, "pull")),
                    headers={"Content-Length": "0"}, ok=(201, 202),
                    what=f"mount of {self._where(desc)} from {source}", digest=desc.digest)
            except RegistryAuthError:
                continue  # no pull access to the source: try the next, or upload
            if resp.status_code == 201:
                return True, None
            # 202: not mountable from there; the registry opened a normal upload session
            if self.index is not None:
                await asyncio.to_thread(self.index.forget, self.client.domain, source,
                                        desc.digest)
            session = resolve_location(resp.request.url, resp.headers.get("Location", ""))
        return False, session

    async def _start_upload(self, desc: Descriptor) -> httpx.URL:
        url = await self.client.url(f"/v2/{self.repository}/blobs/uploads/")
        resp = await self.client.request(
            "POST", url, repository=self.repository, scopes=(self.push_scope,),
            headers={"Content-Length": "0"}, ok=(202,), what=f"upload of {self._where(desc)}",
            digest=desc.digest)
        return resolve_location(resp.request.url, resp.headers.get("Location", ""))

    async def _upload(self, desc: Descriptor, path: Path, location: httpx.URL) -> None:
        chunk = max(1, self.client.options.chunk_size)
        what = f"upload of {self._where(desc)}"
        scopes = (self.push_scope,)
        if desc.size <= chunk:
            resp = await self.client.request(
                "PUT", with_digest(location, desc.digest), repository=self.repository,
                scopes=scopes, ok=(201,), what=what, digest=desc.digest, retry=False,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(desc.size)},
                body=lambda: _file_range(path, 0, desc.size))
        else:
            offset = 0
            while offset < desc.size:
                n = min(chunk, desc.size - offset)
                start = offset
                resp = await self.client.request(
                    "PATCH", location, repository=self.repository, scopes=scopes, ok=(202,),
                    what=what, digest=desc.digest, retry=False,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(n),
                             "Content-Range": f"{start}-{start + n - 1}"},
                    body=lambda start=start, n=n: _file_range(path, start, n))  # type: ignore[misc]
                offset += n
                confirmed = _range_end(resp.headers.get("Range", ""))
                if confirmed is not None and confirmed != offset - 1:
                    raise RegistryError(
                        f"{self.client.domain}/{self.repository}: {what} went wrong: the "
                        f"registry has bytes 0-{confirmed}, pybuild sent 0-{offset - 1}",
                        registry=self.client.domain, repository=self.repository,
                        digest=desc.digest)
                location = resolve_location(resp.request.url, resp.headers.get("Location", ""))
            resp = await self.client.request(
                "PUT", with_digest(location, desc.digest), repository=self.repository,
                scopes=scopes, ok=(201,), what=what, digest=desc.digest, retry=False,
                headers={"Content-Length": "0"})
        _check_digest_header(resp, desc.digest, what=f"{self.client.domain}: {what}")

    async def manifest(self, desc: Descriptor, data: bytes, tag: str) -> Digest:
        reference = tag or str(desc.digest)
        where = (f"manifest {self.client.domain}/{self.repository}"
                 + (f":{tag}" if tag else f"@{desc.digest}"))
        url = await self.client.url(f"/v2/{self.repository}/manifests/{reference}")
        subject = f"manifest {desc.digest}" + (f" (tag {tag!r})" if tag else "")
        resp = await self.client.request(
            "PUT", url, repository=self.repository, scopes=(self.push_scope,), ok=(201,),
            what=subject, digest=desc.digest,
            headers={"Content-Type": desc.media_type}, body=lambda: data)
        _check_digest_header(resp, desc.digest, what=where)
        self._emit("manifest", desc)
        return desc.digest


def _range_end(value: str) -> int | None:
    """The last byte of a `Range: 0-<last>` header (`bytes=` prefix tolerated)."""
    value = value.strip().removeprefix("bytes=")
    _, sep, end = value.partition("-")
    if not sep:
        return None
    try:
        return int(end)
    except ValueError:
        return None


def _check_digest_header(resp: httpx.Response, digest: Digest, *, what: str) -> None:
    claimed = resp.headers.get("Docker-Content-Digest", "").strip()
    if claimed and claimed.startswith("sha256:") and claimed != digest:
        raise IntegrityError(f"{what}: the registry stored {claimed}, expected {digest}")


async def push(
    store: ContentStore,
    descriptor: Descriptor,
    ref: Reference | str,
    *,
    options: RegistryOptions | None = None,
    mount_from: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> Digest:
    """Push the image `descriptor` (in `store`) to `ref`; returns the pushed digest.

    `ref` names a tag (pushed by tag) or only a digest (pushed by digest, which must be the
    descriptor's). `mount_from` lists other repositories of the same registry to mount
    blobs from instead of uploading them.
    """
    reference = as_reference(ref)
    if reference.digest is not None and reference.digest != descriptor.digest:
        raise UserError(f"cannot push image {descriptor.digest} to {reference}: the reference "
                        "pins another digest", code="bad-reference")
    if descriptor.media_type not in mt.INDEX_TYPES | mt.MANIFEST_TYPES:
        raise UserError(f"cannot push {descriptor.media_type}: not an image manifest or index",
                        code="bad-manifest")
    blobs, manifests = await asyncio.to_thread(image_parts, store, descriptor)
    base = options or RegistryOptions()
    endpoint = push_endpoint(reference, base.registries)  # never a mirror
    if endpoint.insecure and not base.insecure:
        base = dataclasses.replace(base, insecure=True)
    index = open_index(base.blob_index)
    async with RegistryClient(reference.domain, base) as client:
        pusher = _Pusher(client, reference.path, store, mount_from, progress, index)
        try:
            if blobs:
                # one blob alone first: it settles the scheme and the authentication before
                # the others start (a refusal then cancels no half-open TLS connections)
                await pusher.blob(blobs[0])
            await run_all([pusher.blob(b) for b in blobs[1:]])
        finally:
            if index is not None:  # also what landed before a failure
                await asyncio.to_thread(index.record, client.domain, reference.path,
                                        pusher.confirmed)
        for desc, data in manifests[:-1]:
            await pusher.manifest(desc, data, "")
        top, data = manifests[-1]
        return await pusher.manifest(top, data, reference.tag if reference.digest is None
                                     else "")

"""Source ops: base images (from the store, or imported from an OCI layout), local
contexts, and what ADD fetches (a URL, a git repository).

Sources are not looked up in the cache: what they are is known (an image by digest, a
context by its files) or fetched and then known by its content (a download's digest, a
commit), and their key says so."""

from __future__ import annotations

import asyncio
import json
import time

from pybuild.builder import sources
from pybuild.builder.cachekey import CacheKey, source_key
from pybuild.builder.events import VertexCached, VertexDone, VertexFailed, VertexStarted
from pybuild.builder.ops.base import OpContext
from pybuild.builder.result import LayerRef, Solved
from pybuild.content.walk import read_config, read_manifest, resolve_platform
from pybuild.digest import Digest
from pybuild.errors import NotFoundError, PybuildError, UserError
from pybuild.llb import SourceOp
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform, host

CONTEXT_PREFIX = "local://"
REMOTE_PREFIXES = ("http://", "https://", "git://")


class SourceHandler:
    def __init__(self, ctx: OpContext) -> None:
        self.ctx = ctx

    async def resolve(self, digest: Digest, op: SourceOp, name: str) -> tuple[CacheKey,
                                                                             Solved]:
        ident = op.identifier
        if ident.startswith(CONTEXT_PREFIX):
            await asyncio.to_thread(self.ctx.contexts.of, digest)  # a named dir must exist
            return source_key(digest), Solved(layers=(), context=True)
        if ident.startswith(REMOTE_PREFIXES):
            return await self._fetch(digest, op, name)
        if ident.startswith("oci-layout://"):
            desc, ref = await asyncio.to_thread(self._import_layout, op)
        elif ident.startswith("docker-image://"):
            ref, _, dg = ident.removeprefix("docker-image://").rpartition("@")
            store = self.ctx.store
            desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest(dg),
                              size=store.size(Digest(dg)))
        else:
            raise UserError(f"unsupported source {ident}")
        solved = await asyncio.to_thread(self._image_layers, desc, ref)
        self.ctx.events(VertexCached(digest=str(digest), name=name))
        return source_key(digest), solved

    def _image_layers(self, desc: Descriptor, ref: str) -> Solved:
        store = self.ctx.store
        manifest = read_manifest(store, desc)
        config = read_config(store, manifest)
        if len(config.diff_ids) != len(manifest.layers):
            raise UserError(f"image {ref}: config has {len(config.diff_ids)} diff_ids but the "
                            f"manifest has {len(manifest.layers)} layers")
        layers = tuple(LayerRef(digest=x.digest, diff_id=d, size=x.size, media_type=x.media_type)
                       for x, d in zip(manifest.layers, config.diff_ids, strict=True))
        for layer in layers:
            if not store.has(layer.digest):
                raise NotFoundError(f"layer {layer.digest} of image {ref} is not in the "
                                    "content store")
        return Solved(layers=layers)

    async def _fetch(self, digest: Digest, op: SourceOp, name: str) -> tuple[CacheKey, Solved]:
        """ADD of a URL or a git repository: fetched (or revalidated) into a directory
        under `$ROOT/cache/`, then read like a local context. The key is the fetched
        content's identity (content digest, or commit), so a changed download or commit
        invalidates the steps that copy it and an unchanged one does not."""
        attrs = dict(op.attrs)
        cache_root = str(self.ctx.sources_dir)
        if op.identifier.startswith("git://"):
            def fetch() -> sources.Fetched:
                return sources.fetch_git(
                    cache_root, attrs.get("git.fullurl", op.identifier),
                    ref=attrs.get("git.ref", ""), subdir=attrs.get("git.subdir", ""),
                    keep_git_dir=attrs.get("git.keepgitdir") == "true",
                    checksum=attrs.get("git.checksum", ""),
                    submodules=attrs.get("git.submodules", "true") != "false")
        else:
            def fetch() -> sources.Fetched:
                return sources.fetch_http(
                    cache_root, op.identifier, filename=attrs.get("http.filename") or
                    "__unnamed__", perm=int(attrs.get("http.perm", "0600"), 8),
                    checksum=attrs.get("http.checksum", ""),
                    refresh=self.ctx.refresh_downloads, ca_cert=self.ctx.http_ca_cert)
        start = time.monotonic()
        events = self.ctx.events
        try:
            fetched = await asyncio.to_thread(fetch)
        except PybuildError as exc:
            events(VertexFailed(digest=str(digest), name=name, error=exc.message))
            raise
        if fetched.fetched:
            events(VertexStarted(digest=str(digest), name=name))
            events(VertexDone(digest=str(digest), name=name, seconds=time.monotonic() - start))
        else:
            events(VertexCached(digest=str(digest), name=name))
        self.ctx.contexts.add_fetched(digest, fetched.root)
        return source_key(digest, fetched.identity), Solved(layers=(), context=True)

    def _import_layout(self, op: SourceOp) -> tuple[Descriptor, str]:
        """`oci-layout://DIR@DIGEST`: the layout's image is imported into the content store
        (blobs verified) unless the store already has it; an index is resolved for the
        op's platform. The platform manifest's descriptor, and the source as written."""
        from pybuild.transports.endpoints import read_image
        from pybuild.transports.names import OCILayoutLocation

        path, _, dg = op.identifier.removeprefix("oci-layout://").rpartition("@")
        if not path or not dg.startswith("sha256:"):
            raise UserError(f"invalid OCI layout source {op.identifier}: want DIR@DIGEST")
        digest = Digest(dg)
        ref = f"oci-layout://{path}@{dg}"
        store = self.ctx.store
        if not store.has(digest):
            # The whole layout: the digest may be a child of its index.
            top = read_image(OCILayoutLocation(path=path), store).descriptor
            if not store.has(digest):
                raise NotFoundError(f"OCI layout {path} has no image {dg} (its image is "
                                    f"{top.digest})")
        data = store.read(digest, what="manifest")
        media_type = json.loads(data).get("mediaType", mt.OCI_MANIFEST)
        desc = Descriptor(media_type=media_type, digest=digest, size=len(data))
        if media_type in mt.INDEX_TYPES:
            attrs = dict(op.attrs)
            platform = Platform.parse(attrs["platform"]) if attrs.get("platform") else host()
            desc = resolve_platform(store, desc, platform, name=ref)
        return desc, ref

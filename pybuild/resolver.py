"""The frontend's image resolver over a root: base images come from the local image
store, missing ones are pulled from their registry (pull policy "missing", the default),
every one is re-resolved from its registry ("always": buildx's `--pull`), or none is
("never"); `oci-layout://` references are imported."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import read_config, read_manifest, resolve_platform
from pybuild.digest import Digest
from pybuild.errors import NotFoundError, UserError
from pybuild.frontend.resolver import ResolvedImage
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference

if TYPE_CHECKING:
    from pybuild.registry import RegistryOptions
    from pybuild.request import PullPolicy

OnImage = Callable[[Manifest, ImageConfig], None]


class StoreResolver:
    """`resolved`: each name answered (from the store, or pulled into it) -> its digest
    there (the frontend's memo is valid while the store still says the same).
    `on_image(manifest, config)`: called with each image resolved."""

    def __init__(self, content: ContentStore, images: ImageStore, *,
                 registry: RegistryOptions | None = None, pull: PullPolicy = "missing",
                 on_image: OnImage | None = None) -> None:
        if pull not in ("missing", "always", "never"):
            raise ValueError(f"pull policy {pull!r}: use missing, always or never")
        self.content = content
        self.images = images
        self.registry = registry
        self.pull = pull
        self.on_image = on_image
        self.resolved: dict[str, str] = {}

    def resolve(self, ref: str, platform: Platform) -> ResolvedImage:
        if ref.startswith("oci-layout://"):
            return self._resolve_layout(ref, platform)
        try:
            reference = Reference.parse(ref)
        except UserError as exc:
            raise UserError(f"invalid base image reference {ref!r}: {exc.message}") from None
        if reference.digest is not None:
            # A pin names content: the store's copy of exactly that, else a pull by digest;
            # never whatever the store holds under the name (so "always" changes nothing).
            desc = self._pinned(reference) or self._pull(reference, platform)
        elif self.pull == "always":  # the registry's current image for the name
            desc = self._pull(reference, platform)
        else:
            record = self.images.find(reference)
            desc = record.descriptor if record is not None else self._pull(reference,
                                                                           platform)
        self.resolved[ref] = str(desc.digest)
        desc = resolve_platform(self.content, desc, platform, name=reference.familiar)
        manifest = read_manifest(self.content, desc)
        config = read_config(self.content, manifest)
        if self.on_image is not None:
            self.on_image(manifest, config)
        name = reference.repository if reference.digest else str(
            reference.with_tag(reference.tag or "latest"))
        return ResolvedImage(name=name, digest=desc.digest, config=config)

    def _pinned(self, reference: Reference) -> Descriptor | None:
        """The manifest or index `reference`'s digest names, if the store has it."""
        assert reference.digest is not None
        return pinned_descriptor(self.content, reference.digest)

    def _pull(self, reference: Reference, platform: Platform) -> Descriptor:
        not_here = NotFoundError(
            f"base image {reference.familiar} is not in the local image store",
            hint="pybuild builds from images in its store (`pybuild images`) and pulls "
                 "missing ones from their registry; `pybuild load -i` imports an OCI or "
                 "docker archive",
        )
        if self.pull == "never":
            raise not_here
        from pybuild.registry import pull_sync
        from pybuild.registry.errors import RegistryUnreachableError
        from pybuild.startup import enable_tls

        enable_tls()
        try:
            desc = pull_sync(reference, self.content, platforms=[platform],
                             options=self.registry)
        except RegistryUnreachableError as exc:
            if self.pull == "always":
                raise NotFoundError(f"--pull: cannot re-resolve base image "
                                    f"{reference.familiar}: {exc.message}",
                                    hint="--pull (always) fetches every base image from its "
                                         "registry; without it, the store's copy is used"
                                    ) from None
            raise NotFoundError(f"{not_here.message}, and {exc.message}",
                                hint=not_here.hint) from None
        if reference.digest is None:  # a pinned pull is found again by its digest
            self.images.put(reference, desc,
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return desc

    def _resolve_layout(self, ref: str, platform: Platform) -> ResolvedImage:
        from pybuild.transports.endpoints import read_image
        from pybuild.transports.names import OCILayoutLocation, parse_location

        location = parse_location(ref)
        assert isinstance(location, OCILayoutLocation)
        desc = read_image(location, self.content).descriptor
        desc = resolve_platform(self.content, desc, platform, name=ref)
        config = read_config(self.content, read_manifest(self.content, desc))
        return ResolvedImage(name=f"oci-layout://{location.path}", digest=desc.digest,
                             config=config)


def pinned_descriptor(content: ContentStore, digest: Digest) -> Descriptor | None:
    """The descriptor of the manifest or index stored under `digest`; None if the store
    has no such blob, or it is not an image (a layer, a config)."""
    import json

    if not content.has(digest):
        return None
    data = content.read(digest, what="manifest")
    try:
        media_type = json.loads(data).get("mediaType", "")
    except (ValueError, AttributeError):
        return None
    if media_type not in mt.INDEX_TYPES and media_type not in mt.MANIFEST_TYPES:
        return None
    return Descriptor(media_type=media_type, digest=digest, size=len(data))

"""Walking images in the content store: platform resolution and reachability for GC."""

from __future__ import annotations

from collections.abc import Iterable

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import NotFoundError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob
from pybuild.oci.platform import Platform


def read_manifest(store: ContentStore, desc: Descriptor) -> Manifest:
    data = store.read(desc.digest, what="manifest")
    verify_blob(data, desc, what="manifest")
    return Manifest.parse(data, where=f"manifest {desc.digest}")


def read_index(store: ContentStore, desc: Descriptor) -> Index:
    data = store.read(desc.digest, what="index")
    verify_blob(data, desc, what="index")
    return Index.parse(data, where=f"index {desc.digest}")


def read_config(store: ContentStore, manifest: Manifest) -> ImageConfig:
    data = store.read(manifest.config.digest, what="image config")
    verify_blob(data, manifest.config, what="image config")
    return ImageConfig.parse(data, where=f"image config {manifest.config.digest}")


def platforms_of(store: ContentStore, desc: Descriptor) -> list[tuple[Descriptor, Platform]]:
    """Every (manifest descriptor, platform) an image descriptor offers."""
    if desc.media_type in mt.INDEX_TYPES:
        out: list[tuple[Descriptor, Platform]] = []
        for child in read_index(store, desc).manifests:
            if child.media_type in mt.MANIFEST_TYPES and child.platform is not None:
                out.append((child, child.platform))
            elif child.media_type in mt.INDEX_TYPES:
                out.extend(platforms_of(store, child))
        return out
    manifest = read_manifest(store, desc)
    return [(desc, read_config(store, manifest).platform)]


def resolve_platform(
    store: ContentStore, desc: Descriptor, platform: Platform, *, name: str = "image"
) -> Descriptor:
    """The manifest descriptor of `desc` for `platform` (an index is searched)."""
    if desc.media_type in mt.MANIFEST_TYPES:
        config = read_config(store, read_manifest(store, desc))
        if not platform.matches(config.platform):
            raise NotFoundError(
                f"{name} is for {config.platform}, not for the requested platform {platform}"
            )
        return desc
    candidates = platforms_of(store, desc)
    for child, child_platform in candidates:
        if platform.matches(child_platform):
            return child
    offered = ", ".join(str(p) for _, p in candidates) or "none"
    raise NotFoundError(f"{name} has no image for platform {platform} (it has: {offered})")


def reachable(store: ContentStore, roots: Iterable[Descriptor]) -> set[Digest]:
    """All blobs reachable from the root descriptors (missing children are tolerated)."""
    seen: set[Digest] = set()
    stack = list(roots)
    while stack:
        desc = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if not store.has(desc.digest):
            continue
        if desc.media_type in mt.INDEX_TYPES:
            stack.extend(Index.parse(store.read(desc.digest, verify=False)).manifests)
        elif desc.media_type in mt.MANIFEST_TYPES:
            m = Manifest.parse(store.read(desc.digest, verify=False))
            stack.append(m.config)
            stack.extend(m.layers)
    return seen

"""Walking images in the content store: the one image walker, platform resolution.

`walk` visits an image (a manifest or an index, with everything below it) once per
digest and returns its parts: manifests children-first (the order in which a registry
or a layout reader can check each reference as it arrives) and the other blobs. Strict
walks (export, push) fail on a hole; tolerant ones (GC, which must go on past a broken
image) record it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


def children(desc: Descriptor, data: bytes) -> tuple[Descriptor, ...]:
    """What a manifest (config, layers) or an index (manifests) refers to; () for a blob."""
    if mt.is_index(desc.media_type):
        return Index.parse(data, where=f"index {desc.digest}").manifests
    if mt.is_manifest(desc.media_type):
        m = Manifest.parse(data, where=f"manifest {desc.digest}")
        return (m.config, *m.layers)
    return ()


def is_tree(desc: Descriptor) -> bool:
    """A manifest or an index: a blob with children."""
    return mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageParts:
    """Everything an image is made of, each digest once."""

    # Manifests and indexes with their bytes, children before parents, the top last.
    manifests: tuple[tuple[Descriptor, bytes], ...]
    # Configs, layers and other blobs that are in the store, in the order first seen.
    blobs: tuple[Descriptor, ...]
    # Foreign layers absent from the store (they stay at their URLs).
    foreign: tuple[Descriptor, ...] = ()
    # Tolerant walks only: referenced blobs the store does not have.
    missing: tuple[Descriptor, ...] = ()

    @property
    def in_order(self) -> tuple[Descriptor, ...]:
        """Every stored blob, each after all it refers to (blobs are leaves)."""
        return (*self.blobs, *(d for d, _ in self.manifests))

    @property
    def digests(self) -> frozenset[Digest]:
        """Every digest referenced, present or not."""
        return frozenset(d.digest for d in (*self.in_order, *self.foreign, *self.missing))


class _Walker:
    def __init__(self, store: ContentStore, *, strict: bool) -> None:
        self.store = store
        self.strict = strict
        self.seen: set[Digest] = set()
        self.manifests: list[tuple[Descriptor, bytes]] = []
        self.blobs: list[Descriptor] = []
        self.foreign: list[Descriptor] = []
        self.missing: list[Descriptor] = []

    def visit(self, root: Descriptor, parent: str) -> None:
        # Depth-first with an explicit stack: an index of indexes cannot exhaust recursion.
        stack: list[tuple[Descriptor, str, bool]] = [(root, parent, False)]
        data_of: dict[Digest, bytes] = {}
        while stack:
            desc, referrer, expanded = stack.pop()
            if expanded:
                self.manifests.append((desc, data_of.pop(desc.digest)))
                continue
            if desc.digest in self.seen:
                continue
            self.seen.add(desc.digest)
            if not self.store.has(desc.digest):
                self._absent(desc, referrer)
                continue
            if not is_tree(desc):
                self.blobs.append(desc)
                continue
            data = self.store.read(desc.digest, what="manifest", verify=self.strict)
            if self.strict:
                verify_blob(data, desc, what="manifest")
            data_of[desc.digest] = data
            stack.append((desc, referrer, True))
            name = f"{'index' if mt.is_index(desc.media_type) else 'manifest'} {desc.digest}"
            stack.extend((c, name, False) for c in reversed(children(desc, data)))

    def _absent(self, desc: Descriptor, referrer: str) -> None:
        if mt.is_foreign(desc.media_type, desc.urls):
            self.foreign.append(desc)
        elif self.strict:
            raise NotFoundError(f"blob {desc.digest} ({desc.media_type}, referenced by "
                                f"{referrer}) is not in the content store")
        else:
            self.missing.append(desc)

    def parts(self) -> ImageParts:
        return ImageParts(manifests=tuple(self.manifests), blobs=tuple(self.blobs),
                          foreign=tuple(self.foreign), missing=tuple(self.missing))


def walk(store: ContentStore, desc: Descriptor, *, strict: bool,
         what: str = "the image") -> ImageParts:
    """The parts of the image `desc`. `strict`: manifests are verified against their
    descriptors and a missing blob (other than a foreign layer) is a NotFoundError."""
    walker = _Walker(store, strict=strict)
    walker.visit(desc, what)
    return walker.parts()


def reachable(store: ContentStore, roots: Iterable[Descriptor]) -> set[Digest]:
    """All digests reachable from the root descriptors (missing children are tolerated):
    what GC keeps."""
    walker = _Walker(store, strict=False)
    for root in roots:
        walker.visit(root, "an image")
    return set(walker.parts().digests)


def platforms_of(store: ContentStore, desc: Descriptor) -> list[tuple[Descriptor, Platform]]:
    """Every (manifest descriptor, platform) an image descriptor offers."""
    if mt.is_index(desc.media_type):
        out: list[tuple[Descriptor, Platform]] = []
        for child in read_index(store, desc).manifests:
            if mt.is_manifest(child.media_type) and child.platform is not None:
                out.append((child, child.platform))
            elif mt.is_index(child.media_type):
                out.extend(platforms_of(store, child))
        return out
    manifest = read_manifest(store, desc)
    return [(desc, read_config(store, manifest).platform)]


def resolve_platform(
    store: ContentStore, desc: Descriptor, platform: Platform, *, name: str = "image"
) -> Descriptor:
    """The manifest descriptor of `desc` for `platform` (an index is searched)."""
    if mt.is_manifest(desc.media_type):
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

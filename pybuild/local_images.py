"""The local image store as its commands see it: list, inspect, name, unname, load."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pybuild.content.walk import platforms_of, reachable, read_config, read_manifest
from pybuild.content.walk import resolve_platform as _resolve_platform
from pybuild.errors import NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform, host
from pybuild.oci.reference import Reference
from pybuild.root import Root


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSummary:
    name: str  # familiar form
    digest: str
    platforms: tuple[Platform, ...]
    size: int
    created: str
    broken: str = ""  # why the image cannot be read, if it cannot


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageDetails:
    name: str
    descriptor: Descriptor  # as stored (manifest or index)
    manifest_descriptor: Descriptor  # the platform's manifest
    manifest: Manifest
    config: ImageConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    descriptor: Descriptor
    names: tuple[str, ...]


def summaries(root: Root) -> list[ImageSummary]:
    out = []
    for rec in root.images.list():
        name = Reference.parse(rec.name).familiar
        try:
            plats = tuple(p for _, p in platforms_of(root.content, rec.descriptor))
            size = image_size(root, rec.descriptor)
        except UserError as exc:
            out.append(ImageSummary(name=name, digest=rec.descriptor.digest, platforms=(),
                                    size=0, created=rec.created, broken=exc.message))
            continue
        out.append(ImageSummary(name=name, digest=rec.descriptor.digest, platforms=plats,
                                size=size, created=rec.created))
    return out


def image_size(root: Root, desc: Descriptor) -> int:
    store = root.content
    return sum(store.size(d) for d in reachable(store, [desc]) if store.has(d))


def resolve(root: Root, image: str, platform: Platform | None = None) -> tuple[str, Descriptor,
                                                                             Descriptor]:
    """(stored name, stored descriptor, the platform's manifest descriptor); an index
    without a platform asked resolves for this host."""
    rec = root.images.get(image)
    desc = rec.descriptor
    if platform is not None or desc.media_type in mt.INDEX_TYPES:
        desc = _resolve_platform(root.content, desc, platform or host(), name=image)
    return rec.name, rec.descriptor, desc


def details(root: Root, image: str, platform: Platform | None = None) -> ImageDetails:
    name, stored, desc = resolve(root, image, platform)
    manifest = read_manifest(root.content, desc)
    return ImageDetails(name=name, descriptor=stored, manifest_descriptor=desc,
                        manifest=manifest, config=read_config(root.content, manifest))


def tag(root: Root, source: str, target: str) -> None:
    rec = root.images.get(source)
    ref = Reference.parse(target)
    check_pin(ref, rec.descriptor)
    root.images.put(ref, rec.descriptor, rec.created)


def check_pin(ref: Reference, desc: Descriptor) -> None:
    """A name with a digest must name that content (docker refuses digests in tags; a
    digest that is the image's own is harmless)."""
    if ref.digest is not None and ref.digest != desc.digest:
        raise UserError(f"refusing to name image {desc.digest} {ref.familiar}: the reference "
                        "pins another digest", code="bad-reference",
                        hint="give a tag, not a digest (NAME:TAG)")


def untag(root: Root, name: str) -> Descriptor:
    return root.images.remove(name).descriptor


def load(root: Root, path: str | Path, tags: tuple[str, ...] = ()) -> LoadReport:
    """Import an OCI layout (directory or tar), a docker archive (pybuild's, or a classic
    `docker save` / `podman save` one) into the store; without `tags`, the names the
    archive records."""
    from pybuild.transports.endpoints import location_of, read_image

    if not Path(path).exists():
        raise NotFoundError(f"{path}: no such file or directory")
    imported = read_image(location_of(path), root.content)
    desc = imported.descriptor
    names = list(tags) or list(imported.names)
    if not names:
        raise UserError(f"{path} does not name its image; give a name with -t NAME")
    plain = Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size,
                       platform=desc.platform)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    familiar = []
    refs = [Reference.parse(name) for name in names]
    for ref in refs:
        check_pin(ref, desc)
    for ref in refs:
        root.images.put(ref, plain, created)
        familiar.append(ref.familiar)
    return LoadReport(descriptor=desc, names=tuple(familiar))

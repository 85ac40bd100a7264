"""`docker-archive:FILE`: `docker save` archives, written as Docker 25+ writes them, read in
every form `docker save` and `podman save` have written.

Written: at once a `docker load` tarball (manifest.json: Config, RepoTags, Layers) and an
OCI image layout (oci-layout, index.json), every file under `blobs/sha256/<hex>`. Layers
are the image's own blobs, compressed as they are in the store, not re-written as plain
tars: that is what Docker 25+ with the containerd image store writes, it keeps the
manifest (and so the image digest) unchanged, and it costs one streamed copy. `docker
load` (any version since 1.10), `podman load` and skopeo's `docker-archive:` all
decompress layer files themselves and check them against the config's diff_ids. A docker
archive holds single-platform images, so an index needs `platform=`.

Read: an archive that is also an OCI layout is read as one (its manifests, and so the
image digest, are kept). A classic archive (moby before 25: `<id>/layer.tar`; podman and
skopeo: `<diff_id>.tar`; layers plain or compressed, repeated ones as in-archive links)
has no manifest of its own: as containers/image does, pybuild makes one, with the
uncompressed layers, each verified against the config's diff_id as it streams into the
store (so a layer's digest is its diff_id, like a layer pybuild built itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_manifest, resolve_platform, walk
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.layers.decompress import decompressed
from pybuild.layers.errors import LayerError, LayerTooLargeError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference
from pybuild.transports.archive import MODE_BLOB, ArchiveWriter, blob_path
from pybuild.transports.destination import Dest, open_destination
from pybuild.transports.layout_index import (
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    LayoutName,
    index_bytes,
    layout_file_bytes,
    named_descriptor,
)
from pybuild.transports.layout_source import Source, TarSource, is_layout, read_json, read_small
from pybuild.transports.names import ImportedImage

MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 20
_HEX_NAME = re.compile(r"(?:^|/)(?:sha256/)?([0-9a-f]{64})(?:\.json)?$")


# -- writing --------------------------------------------------------------------------


def _repo_tags(repo_tags: Sequence[str]) -> list[Reference]:
    out: list[Reference] = []
    for tag in repo_tags:
        ref = Reference.parse(tag)
        if ref.digest is not None:
            raise UserError(
                f"{tag!r}: a docker archive names images by tag, not by digest",
                code="bad-reference",
            )
        if ref not in out:
            out.append(ref)
    return out


def single_manifest(
    store: ContentStore, descriptor: Descriptor, platform: Platform | None
) -> Descriptor:
    """The one image a docker archive of `descriptor` holds: `platform`'s of an index
    (which it needs), or the manifest itself (checked against `platform` if given)."""
    if mt.is_index(descriptor.media_type):
        if platform is None:
            offered = ", ".join(str(p) for _, p in platforms_of(store, descriptor)) or "none"
            raise UserError(
                "a docker archive holds one platform, and this image is multi-platform "
                f"({offered})",
                code="multi-platform",
                hint="choose one with --platform, or export with type=oci",
            )
        return resolve_platform(store, descriptor, platform)
    if not mt.is_manifest(descriptor.media_type):
        raise UserError(f"{descriptor.media_type} is not an image manifest", code="bad-manifest")
    if platform is not None:
        resolve_platform(store, descriptor, platform)  # raises if it is another platform
    return descriptor


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedImage:
    """One image of a docker archive: `top` is what index.json lists (an index keeps every
    platform, as Docker 25+ saves it), `manifest` the single-platform manifest that
    manifest.json lists for `docker load`; `names` its RepoTags (and index.json entries)."""

    top: Descriptor
    manifest: Descriptor
    names: tuple[str, ...] = ()


def write_docker_archive(
    store: ContentStore,
    manifest_descriptor: Descriptor,
    dest: Dest,
    *,
    repo_tags: Sequence[str],
    platform: Platform | None = None,
) -> Descriptor:
    """Write a `docker save`-format archive of one image; returns its manifest descriptor.

    `manifest_descriptor` may be an index when `platform` picks one of its images.
    `repo_tags` become manifest.json's RepoTags (familiar form, `app:1`) and one index.json
    entry each, annotated as Docker does. `dest`: see `destination.open_destination`.
    """
    desc = single_manifest(store, manifest_descriptor, platform)
    write_docker_archives(store, [ArchivedImage(top=desc, manifest=desc,
                                                names=tuple(repo_tags))], dest)
    return desc


def write_docker_archives(store: ContentStore, images: Sequence[ArchivedImage],
                          dest: Dest) -> None:
    """Write several images into one docker archive (`docker save IMAGE...`). Every blob
    of every `top` goes in once; manifest.json lists each image's `manifest`."""
    blobs: dict[Digest, Descriptor] = {}
    docker_manifest = []
    entries: list[Descriptor] = []
    for image in images:
        manifest = read_manifest(store, image.manifest)
        missing = [d.digest for d in manifest.layers if not store.has(d.digest)]
        if missing:
            raise NotFoundError(
                f"layer {missing[0]} is a foreign layer that is not in the content store; "
                "a docker archive must carry every layer"
            )
        for part in walk(store, image.top, strict=True, what="the exported image").in_order:
            blobs.setdefault(part.digest, part)
        tags = _repo_tags(image.names)
        docker_manifest.append({
            "Config": blob_path(manifest.config.digest),
            "RepoTags": [t.familiar for t in tags],
            "Layers": [blob_path(d.digest) for d in manifest.layers],
        })
        named = [named_descriptor(image.top, LayoutName(ref_name=t.tag, image_name=str(t)))
                 for t in tags] or [image.top]
        entries += [e for e in named if e not in entries]
    with open_destination(dest, what="docker archive") as out:
        archive = ArchiveWriter(out)
        archive.add_blobs(store, tuple(blobs.values()))
        archive.add_bytes(INDEX_FILE, index_bytes(entries))
        archive.add_bytes(
            MANIFEST_FILE, json.dumps(docker_manifest, separators=(",", ":")).encode()
        )
        archive.add_bytes(OCI_LAYOUT_FILE, layout_file_bytes(), mode=MODE_BLOB)
        archive.close()


# -- reading --------------------------------------------------------------------------


def read_docker_archive(path: str | os.PathLike[str], store: ContentStore, *,
                        reference: Reference | None = None,
                        index: int | None = None) -> ImportedImage:
    """Import one image of a docker archive: the one tagged `reference`, the `index`-th
    of manifest.json, or the only one. Returns it with its RepoTags as names."""
    source = TarSource(Path(path), kind="docker archive")
    try:
        if is_layout(source):
            from pybuild.transports.oci_layout import read_from

            try:
                return read_from(source, store, name=str(reference) if reference else None,
                                 index=index)
            except NotFoundError:
                # Docker 25 can save an index whose other platforms it does not have.
                if not source.has(MANIFEST_FILE):
                    raise
        return _read_classic(source, store, reference, index)
    finally:
        source.close()


def _entries(source: Source) -> list[dict[str, object]]:
    try:
        doc = read_json(source, MANIFEST_FILE)
    except NotFoundError:
        raise UserError(f"{source.where} is neither a docker archive (no manifest.json) nor "
                        "an OCI layout (no oci-layout)") from None
    if not isinstance(doc, list) or not doc or not all(isinstance(e, dict) for e in doc):
        raise UserError(f"{source.where}: manifest.json is not a list of images")
    return doc


def _tags(source: Source, entry: dict[str, object]) -> tuple[str, ...]:
    raw = entry.get("RepoTags") or []
    if not isinstance(raw, list):
        raise UserError(f"{source.where}: manifest.json RepoTags is not a list")
    out: list[str] = []
    for tag in raw:
        with contextlib.suppress(UserError):
            name = str(Reference.parse(str(tag)))
            if name not in out:
                out.append(name)
    return tuple(out)


def _choose(source: Source, entries: list[dict[str, object]], reference: Reference | None,
            index: int | None) -> dict[str, object]:
    if index is not None:
        if not 0 <= index < len(entries):
            raise NotFoundError(f"{source.where} has no image @{index} (it holds "
                                f"{len(entries)})")
        return entries[index]
    available = sorted({t for e in entries for t in _tags(source, e)}) or ["(untagged)"]
    if reference is not None:
        matches = [e for e in entries if str(reference) in _tags(source, e)]
        if not matches:
            raise NotFoundError(f"{source.where} has no image tagged {reference.familiar}",
                                hint=f"available: {', '.join(available)}")
        return matches[0]
    if len(entries) > 1:
        raise UserError(f"{source.where} holds {len(entries)} images; choose one by name",
                        code="ambiguous-image", hint=f"available: {', '.join(available)}")
    return entries[0]


def _member(source: Source, entry: dict[str, object], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise UserError(f"{source.where}: manifest.json has no {key}")
    return value


def read_all_docker_archive(path: str | os.PathLike[str],
                            store: ContentStore) -> list[ImportedImage]:
    """Import every image of a docker archive, in the order it lists them, each with the
    names it records (index.json's, else manifest.json's RepoTags)."""
    source = TarSource(Path(path), kind="docker archive")
    try:
        if is_layout(source):
            from pybuild.transports.oci_layout import read_all_from

            try:
                images = read_all_from(source, store)
            except NotFoundError:
                # Docker 25 can save an index whose other platforms it does not have.
                if not source.has(MANIFEST_FILE):
                    raise
            else:
                return _named_by_repo_tags(source, store, images)
        return [_import_classic(source, store, entry) for entry in _entries(source)]
    finally:
        source.close()


def _named_by_repo_tags(source: Source, store: ContentStore,
                        images: list[ImportedImage]) -> list[ImportedImage]:
    """Images an index.json leaves unnamed take the RepoTags manifest.json gives the
    image with their config (Docker 25+ archives name both ways)."""
    if all(i.names for i in images) or not source.has(MANIFEST_FILE):
        return images
    by_config: dict[str, tuple[str, ...]] = {}
    for entry in _entries(source):
        config = entry.get("Config")
        if isinstance(config, str):
            by_config.setdefault(config, _tags(source, entry))
    out = []
    for image in images:
        names = image.names
        if not names:
            for manifest in _manifests_of(store, image.descriptor):
                names = by_config.get(blob_path(manifest.config.digest), ())
                if names:
                    break
        out.append(ImportedImage(descriptor=image.descriptor, names=names))
    return out


def _manifests_of(store: ContentStore, desc: Descriptor) -> list[Manifest]:
    if mt.is_manifest(desc.media_type):
        return [read_manifest(store, desc)]
    return [read_manifest(store, d) for d, _ in platforms_of(store, desc)
            if store.has(d.digest)]


def _read_classic(source: Source, store: ContentStore, reference: Reference | None,
                  index: int | None) -> ImportedImage:
    return _import_classic(source, store, _choose(source, _entries(source), reference, index))


def _import_classic(source: Source, store: ContentStore,
                    entry: dict[str, object]) -> ImportedImage:
    config_name = _member(source, entry, "Config")
    config_bytes = read_small(source, config_name)
    config_digest = Digest.from_bytes(config_bytes)
    named = _HEX_NAME.search(config_name)
    if named and named.group(1) != config_digest.hex:
        raise IntegrityError(f"{source.where}: config {config_name} hashes to {config_digest}")
    config = ImageConfig.parse(config_bytes, where=f"{source.where} {config_name}")
    layer_names = entry.get("Layers") or []
    if not isinstance(layer_names, list) or not all(isinstance(x, str) for x in layer_names):
        raise UserError(f"{source.where}: manifest.json Layers is not a list of files")
    if len(layer_names) != len(config.diff_ids):
        raise IntegrityError(f"{source.where}: manifest.json lists {len(layer_names)} layers, "
                             f"the config {len(config.diff_ids)} diff_ids")
    layers = tuple(_import_layer(source, store, str(name), diff_id)
                   for name, diff_id in zip(layer_names, config.diff_ids, strict=True))
    store.write(config_bytes)
    manifest = Manifest(media_type=mt.OCI_MANIFEST, layers=layers, config=Descriptor(
        media_type=mt.OCI_CONFIG, digest=config_digest, size=len(config_bytes)))
    raw = manifest.encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(raw), size=len(raw))
    return ImportedImage(descriptor=desc, names=_tags(source, entry))


def _import_layer(source: Source, store: ContentStore, name: str,
                  diff_id: Digest) -> Descriptor:
    """One layer file, uncompressed into the store and checked against its diff_id."""
    if store.has(diff_id):
        return Descriptor(media_type=mt.OCI_LAYER, digest=diff_id, size=store.size(diff_id))
    with source.open(name) as raw, store.writer() as w:
        try:
            stream = decompressed(raw, what=f"layer {name} of {source.where}")
            while chunk := stream.read(_CHUNK):
                w.write(chunk)
        except LayerTooLargeError:
            raise  # a decompression bomb: refused as such, named
        except LayerError as exc:  # the compressed stream is damaged
            raise IntegrityError(f"{source.where}: layer {name} is corrupt: {exc}") from None
        if w.digest != diff_id:
            raise IntegrityError(f"{source.where}: layer {name} hashes to {w.digest} "
                                 f"uncompressed, the image config says {diff_id}")
        size = w.size
        w.commit(diff_id, size)
    return Descriptor(media_type=mt.OCI_LAYER, digest=diff_id, size=size)

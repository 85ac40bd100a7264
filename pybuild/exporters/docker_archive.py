"""`docker save` archives, in the form Docker 25+ writes them.

The archive is at once a `docker load` tarball (manifest.json: Config, RepoTags, Layers) and an
OCI image layout (oci-layout, index.json), with every file under `blobs/sha256/<hex>`.

Layers are the image's own blobs, compressed as they are in the store, not re-written as
plain tars: that is what Docker 25+ with the containerd image store writes, it keeps the
manifest (and so the image digest) unchanged, and it costs one streamed copy. `docker load`
(any version since 1.10), `podman load` and skopeo's `docker-archive:` all decompress layer
files themselves and check them against the config's diff_ids.

A docker archive holds single-platform images, so an index needs `platform=`.
"""

from __future__ import annotations

import json

from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_manifest, resolve_platform
from pybuild.errors import NotFoundError, UserError
from pybuild.exporters.oci_layout import (
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    ArchiveWriter,
    Dest,
    LayoutName,
    blob_path,
    image_blobs,
    index_bytes,
    layout_file_bytes,
    named_descriptor,
    open_archive_dest,
)
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference

MANIFEST_FILE = "manifest.json"
_MODE_BLOB = 0o444


def _repo_tags(repo_tags: list[str]) -> list[Reference]:
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


def _single_manifest(
    store: ContentStore, descriptor: Descriptor, platform: Platform | None
) -> Descriptor:
    if descriptor.media_type in mt.INDEX_TYPES:
        if platform is None:
            offered = ", ".join(str(p) for _, p in platforms_of(store, descriptor)) or "none"
            raise UserError(
                "a docker archive holds one platform, and this image is multi-platform "
                f"({offered})",
                code="multi-platform",
                hint="choose one with --platform, or export with type=oci",
            )
        return resolve_platform(store, descriptor, platform)
    if descriptor.media_type not in mt.MANIFEST_TYPES:
        raise UserError(f"{descriptor.media_type} is not an image manifest", code="bad-manifest")
    if platform is not None:
        resolve_platform(store, descriptor, platform)  # raises if it is another platform
    return descriptor


def write_docker_archive(
    store: ContentStore,
    manifest_descriptor: Descriptor,
    dest: Dest,
    *,
    repo_tags: list[str],
    platform: Platform | None = None,
) -> Descriptor:
    """Write a `docker save`-format archive of one image; returns its manifest descriptor.

    `manifest_descriptor` may be an index when `platform` picks one of its images.
    `repo_tags` become manifest.json's RepoTags (familiar form, `app:1`) and one index.json
    entry each, annotated as Docker does.
    """
    desc = _single_manifest(store, manifest_descriptor, platform)
    manifest = read_manifest(store, desc)
    tags = _repo_tags(repo_tags)
    blobs = image_blobs(store, desc)
    missing = [d.digest for d in manifest.layers if not store.has(d.digest)]
    if missing:
        raise NotFoundError(
            f"layer {missing[0]} is a foreign layer that is not in the content store; "
            "a docker archive must carry every layer"
        )
    docker_manifest = [
        {
            "Config": blob_path(manifest.config.digest),
            "RepoTags": [t.familiar for t in tags],
            "Layers": [blob_path(d.digest) for d in manifest.layers],
        }
    ]
    entries = [
        named_descriptor(desc, LayoutName(ref_name=t.tag, image_name=str(t))) for t in tags
    ] or [desc]
    with open_archive_dest(dest) as out:
        archive = ArchiveWriter(out)
        archive.add_blobs(store, blobs)
        archive.add_bytes(INDEX_FILE, index_bytes(entries))
        archive.add_bytes(
            MANIFEST_FILE, json.dumps(docker_manifest, separators=(",", ":")).encode()
        )
        archive.add_bytes(OCI_LAYOUT_FILE, layout_file_bytes(), mode=_MODE_BLOB)
        archive.close()
    return desc


class DockerArchiveExporter:
    """The `type=docker,dest=…` exporter."""

    def __init__(
        self, dest: Dest, *, repo_tags: list[str], platform: Platform | None = None
    ) -> None:
        self.dest = dest
        self.repo_tags = repo_tags
        self.platform = platform

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        return write_docker_archive(
            store, descriptor, self.dest, repo_tags=self.repo_tags, platform=self.platform
        )

"""An image validator every producer's tests call (like go-containerregistry's validate)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from typing import Protocol

from pybuild.digest import Digest
from pybuild.errors import IntegrityError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob


class BlobSource(Protocol):
    def read(self, digest: Digest, *, what: str = ..., verify: bool = ...) -> bytes: ...


def _uncompressed_digest(data: bytes, media_type: str) -> str:
    kind = mt.layer_compression(media_type)
    if kind == "gzip":
        raw = gzip.decompress(data)
    elif kind == "zstd":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(data).read()
    else:
        raw = data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def validate_image(source: BlobSource, desc: Descriptor) -> list[str]:
    """Check an image (manifest or index) completely; raise on the first problem.

    Returns the list of manifest digests checked."""
    data = source.read(desc.digest, what="image", verify=True)
    verify_blob(data, desc, what="manifest")
    if desc.media_type in mt.INDEX_TYPES:
        index = Index.parse(data)
        checked = []
        for child in index.manifests:
            if child.platform is None:
                raise IntegrityError(f"index {desc.digest}: child {child.digest} has no platform")
            if mt.is_docker(index.media_type) and not mt.is_docker(child.media_type):
                raise IntegrityError(f"index {desc.digest}: a Docker manifest list holds "
                                     f"{child.media_type} {child.digest}")
            checked += validate_image(source, child)
        return checked
    manifest = Manifest.parse(data)
    _check_media_types(desc, manifest)
    config_bytes = source.read(manifest.config.digest, what="config")
    verify_blob(config_bytes, manifest.config, what="config")
    config = ImageConfig.parse(config_bytes)
    if len(config.diff_ids) != len(manifest.layers):
        raise IntegrityError(
            f"manifest {desc.digest}: {len(manifest.layers)} layers but "
            f"{len(config.diff_ids)} diff_ids in the config")
    non_empty = [h for h in config.history if not h.empty_layer]
    if config.history and len(non_empty) != len(manifest.layers):
        raise IntegrityError(
            f"manifest {desc.digest}: {len(manifest.layers)} layers but {len(non_empty)} "
            "non-empty history entries")
    for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        if layer.media_type not in mt.LAYER_TYPES:
            raise IntegrityError(f"layer {layer.digest}: unknown media type {layer.media_type}")
        blob = source.read(layer.digest, what="layer")
        verify_blob(blob, layer, what="layer")
        try:
            actual = _uncompressed_digest(blob, layer.media_type)
        except (OSError, zlib.error, EOFError) as exc:
            raise IntegrityError(f"layer {layer.digest}: cannot decompress ({exc})") from None
        if actual != diff_id:
            raise IntegrityError(f"layer {layer.digest}: uncompressed digest {actual} does not "
                                 f"match diff_id {diff_id}")
    if desc.platform is not None and not desc.platform.matches(config.platform):
        raise IntegrityError(f"manifest {desc.digest}: descriptor platform {desc.platform} "
                             f"differs from config platform {config.platform}")
    return [str(desc.digest)]


def _check_media_types(desc: Descriptor, manifest: Manifest) -> None:
    """One family per manifest: a Docker schema 2 manifest names a Docker config and
    Docker layers, an OCI manifest OCI ones (umoci and containerd refuse a mix)."""
    docker = mt.is_docker(manifest.media_type)
    family = "Docker" if docker else "OCI"
    if desc.media_type != manifest.media_type:
        raise IntegrityError(f"manifest {desc.digest}: its descriptor says {desc.media_type}, "
                             f"the manifest {manifest.media_type}")
    if manifest.config.media_type != (mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG):
        raise IntegrityError(f"manifest {desc.digest}: a {family} manifest with config type "
                             f"{manifest.config.media_type}")
    for layer in manifest.layers:
        if mt.is_docker(layer.media_type) != docker:
            raise IntegrityError(f"manifest {desc.digest}: a {family} manifest with layer "
                                 f"{layer.digest} of type {layer.media_type}")

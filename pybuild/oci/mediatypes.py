"""Media types of the OCI image-spec and Docker image manifest v2 schema 2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

# A layer's compression, in buildx's words (`compression=uncompressed|gzip|zstd`).
Compression = Literal["gzip", "zstd", "uncompressed"]
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd", "uncompressed")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# containerd's name for zstd in a Docker manifest (BuildKit writes it for
# compression=zstd,oci-mediatypes=false).
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER_ZSTD,
        DOCKER_FOREIGN_LAYER_GZIP,
    }
)

# Accept header a registry client sends so that every kind of image is served.
ACCEPT_ALL = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

_TO_DOCKER = {
    OCI_MANIFEST: DOCKER_MANIFEST,
    OCI_INDEX: DOCKER_MANIFEST_LIST,
    OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_LAYER: DOCKER_LAYER,
    OCI_LAYER_ZSTD: DOCKER_LAYER_ZSTD,
}
_TO_OCI = {v: k for k, v in _TO_DOCKER.items()}


def to_docker(media_type: str) -> str:
    return _TO_DOCKER.get(media_type, media_type)


def to_oci(media_type: str) -> str:
    return _TO_OCI.get(media_type, media_type)


def is_docker(media_type: str) -> bool:
    """A Docker schema 2 media type (manifest, list, config or layer)."""
    return media_type.startswith("application/vnd.docker.")


def layer_type(compression: Compression, *, oci: bool) -> str:
    """The layer media type of `compression` in an OCI or a Docker manifest."""
    kind = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "uncompressed": OCI_LAYER}
    return kind[compression] if oci else to_docker(kind[compression])


def layer_compression(media_type: str) -> Compression:
    """'gzip', 'zstd' or 'uncompressed' for a layer media type."""
    if media_type.endswith("gzip"):
        return "gzip"
    if media_type.endswith("zstd"):
        return "zstd"
    return "uncompressed"


def is_index(media_type: str) -> bool:
    """An image index (OCI) or manifest list (Docker)."""
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """A single-image manifest (OCI or Docker schema 2)."""
    return media_type in MANIFEST_TYPES


def is_foreign(media_type: str, urls: Sequence[str] = ()) -> bool:
    """A non-distributable layer: it stays at its URLs and may be absent from a store,
    a layout or a registry."""
    return bool(urls) or media_type == DOCKER_FOREIGN_LAYER_GZIP

"""Descriptors, manifests and indexes (OCI image-spec and Docker schema 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from pybuild.canonical import canonical_json
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.platform import Platform

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()
    artifact_type: str = ""

    @classmethod
    def from_json(cls, data: Any, *, where: str = "descriptor") -> Descriptor:
        if not isinstance(data, dict):
            raise UserError(f"{where}: descriptor is not an object", code="bad-manifest")
        try:
            size = data["size"]
            if not isinstance(size, int) or size < 0:
                raise ValueError("size")
            platform = data.get("platform")
            return cls(
                media_type=str(data["mediaType"]),
                digest=Digest(str(data["digest"])),
                size=size,
                platform=Platform.from_json(platform) if isinstance(platform, dict) else None,
                annotations=tuple(sorted((data.get("annotations") or {}).items())),
                urls=tuple(data.get("urls") or ()),
                artifact_type=str(data.get("artifactType", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{where}: invalid descriptor ({exc})", code="bad-manifest") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def with_annotations(self, **extra: str) -> Descriptor:
        merged = dict(self.annotations)
        merged.update(extra)
        return replace(self, annotations=tuple(sorted(merged.items())))

    def with_platform(self, platform: Platform | None) -> Descriptor:
        return replace(self, platform=platform)


def verify_blob(data: bytes, expected: Descriptor | Digest, *, what: str = "blob") -> None:
    """Raise IntegrityError naming the blob if data does not match the digest (and size)."""
    digest = expected.digest if isinstance(expected, Descriptor) else expected
    if isinstance(expected, Descriptor) and len(data) != expected.size:
        raise IntegrityError(
            f"{what} {digest}: size mismatch (expected {expected.size} bytes, got {len(data)})"
        )
    actual = Digest.from_bytes(data)
    if actual != digest:
        raise IntegrityError(f"{what} {digest}: digest mismatch (content hashes to {actual})")


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{what}: not valid JSON ({exc})", code="bad-manifest") from None
    if not isinstance(value, dict):
        raise UserError(f"{what}: not a JSON object", code="bad-manifest")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    subject: Descriptor | None = None
    artifact_type: str = ""

    @classmethod
    def parse(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        raw = _load_json(data, where)
        if raw.get("schemaVersion") != 2:
            raise UserError(f"{where}: unsupported schemaVersion", code="bad-manifest")
        media_type = str(raw.get("mediaType") or mt.OCI_MANIFEST)
        if media_type not in mt.MANIFEST_TYPES:
            raise UserError(f"{where}: not an image manifest ({media_type})", code="bad-manifest")
        if "config" not in raw or not isinstance(raw.get("layers", []), list):
            raise UserError(f"{where}: config and layers are required", code="bad-manifest")
        subject = raw.get("subject")
        return cls(
            media_type=media_type,
            config=Descriptor.from_json(raw["config"], where=f"{where} config"),
            layers=tuple(
                Descriptor.from_json(d, where=f"{where} layer {i}")
                for i, d in enumerate(raw.get("layers") or [])
            ),
            annotations=tuple(sorted((raw.get("annotations") or {}).items())),
            subject=Descriptor.from_json(subject, where=f"{where} subject") if subject else None,
            artifact_type=str(raw.get("artifactType", "")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [d.to_json() for d in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def encode(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    media_type: str = mt.OCI_INDEX
    manifests: tuple[Descriptor, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, data: bytes, *, where: str = "index") -> Index:
        raw = _load_json(data, where)
        if raw.get("schemaVersion") != 2:
            raise UserError(f"{where}: unsupported schemaVersion", code="bad-manifest")
        media_type = str(raw.get("mediaType") or mt.OCI_INDEX)
        if media_type not in mt.INDEX_TYPES:
            raise UserError(f"{where}: not an image index ({media_type})", code="bad-manifest")
        manifests = raw.get("manifests")
        if not isinstance(manifests, list):
            raise UserError(f"{where}: manifests is required", code="bad-manifest")
        return cls(
            media_type=media_type,
            manifests=tuple(
                Descriptor.from_json(d, where=f"{where} manifest {i}")
                for i, d in enumerate(manifests)
            ),
            annotations=tuple(sorted((raw.get("annotations") or {}).items())),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [d.to_json() for d in self.manifests],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def encode(self) -> bytes:
        return canonical_json(self.to_json())


def sniff_media_type(data: bytes) -> str:
    """The mediaType of a manifest or index blob (falls back to the shape of its JSON)."""
    raw = _load_json(data, "manifest")
    media_type = raw.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    return mt.OCI_INDEX if "manifests" in raw else mt.OCI_MANIFEST

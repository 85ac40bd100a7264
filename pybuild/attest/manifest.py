"""Attestation manifests in an image index, as BuildKit stores them (attestation-storage.md).

Per image manifest: one OCI manifest whose layers are the in-toto statements
(`application/vnd.in-toto+json`, annotated `in-toto.io/predicate-type`), whose config is
the placeholder BuildKit writes (`{"architecture":"unknown","os":"unknown","config":{},
"rootfs":{"type":"layers","diff_ids":[…]}}`), listed in the index after every runnable
manifest with platform `unknown/unknown` and the annotations
`vnd.docker.reference.type=attestation-manifest` and `vnd.docker.reference.digest=<the
image manifest>`. Pure functions over the content store: they write blobs and return
descriptors; naming the result (image store, export) is the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pybuild.attest.intoto import ANNOTATION_PREDICATE_TYPE, MEDIA_TYPE, Statement
from pybuild.content.store import ContentStore
from pybuild.content.walk import read_index, read_manifest
from pybuild.digest import Digest
from pybuild.errors import NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob
from pybuild.oci.platform import Platform

REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
UNKNOWN_PLATFORM = Platform(os="unknown", architecture="unknown")
MAX_STATEMENT = 40 << 20  # BuildKit's maxAttestationBytes


def is_attestation_manifest(desc: Descriptor) -> bool:
    return desc.annotation(REFERENCE_TYPE) == ATTESTATION_MANIFEST


def attestation_config(layers: Sequence[Descriptor]) -> bytes:
    """The config BuildKit's attestationsConfig writes, byte for byte (Go's field order)."""
    config = {"architecture": "unknown", "os": "unknown", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]}}
    return json.dumps(config, separators=(",", ":")).encode()


def write_attestation_manifest(store: ContentStore, image: Descriptor,
                               statements: Sequence[Statement]) -> Descriptor:
    """Write the statements about `image` and their manifest; its index descriptor."""
    if image.media_type not in mt.MANIFEST_TYPES:
        raise UserError(f"attestations attach to an image manifest, not {image.media_type}")
    layers: list[Descriptor] = []
    for statement in statements:
        data = statement.encode()
        layers.append(Descriptor(
            media_type=MEDIA_TYPE, digest=store.write(data), size=len(data),
            annotations=((ANNOTATION_PREDICATE_TYPE, statement.predicate_type),),
        ))
    config = attestation_config(layers)
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(media_type=mt.OCI_CONFIG, digest=store.write(config),
                          size=len(config)),
        layers=tuple(layers),
    ).encode()
    return Descriptor(
        media_type=mt.OCI_MANIFEST, digest=store.write(manifest), size=len(manifest),
        platform=UNKNOWN_PLATFORM,
        annotations=tuple(sorted({REFERENCE_TYPE: ATTESTATION_MANIFEST,
                                  REFERENCE_DIGEST: str(image.digest)}.items())),
    )


def attach(store: ContentStore, images: Sequence[Descriptor],
           statements: Mapping[Digest, Sequence[Statement]], *,
           annotations: tuple[tuple[str, str], ...] = ()) -> Descriptor:
    """An OCI index of `images` (manifest descriptors with their platforms) followed by an
    attestation manifest for each image that has statements; written, its descriptor.

    Attestations the images' old index carried are not kept: pass `image_manifests(index)`
    and the statements wanted now. BuildKit makes every attested index OCI-typed too.
    """
    runnable = [d for d in images if not is_attestation_manifest(d)]
    unknown = set(statements) - {d.digest for d in runnable}
    if unknown:
        raise UserError(f"attestations for {sorted(unknown)[0]}, which is not in the index")
    attached = [write_attestation_manifest(store, d, statements[d.digest])
                for d in runnable if statements.get(d.digest)]
    data = Index(media_type=mt.OCI_INDEX, manifests=(*runnable, *attached),
                 annotations=annotations).encode()
    return Descriptor(media_type=mt.OCI_INDEX, digest=store.write(data), size=len(data))


def image_manifests(index: Index) -> tuple[Descriptor, ...]:
    """The manifests a platform pull chooses from: all but attestation manifests (and
    anything else BuildKit marks `unknown/unknown`)."""
    return tuple(
        d for d in index.manifests
        if not is_attestation_manifest(d)
        and not (d.platform is not None and d.platform.os == "unknown"
                 and d.platform.architecture == "unknown")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Attestation:
    """One statement read back from an index, with the image manifest it is about."""

    image: Digest
    platform: Platform | None  # the image manifest's platform in the index
    layer: Descriptor  # the statement blob's descriptor
    statement: Statement


def read_attestations(store: ContentStore, desc: Descriptor) -> tuple[Attestation, ...]:
    """Every in-toto statement attached to the index `desc` (verified reads); a manifest
    has none. Unknown layer types are skipped, as the storage spec says."""
    if desc.media_type not in mt.INDEX_TYPES:
        return ()
    index = read_index(store, desc)
    platforms = {d.digest: d.platform for d in image_manifests(index)}
    out: list[Attestation] = []
    for entry in index.manifests:
        if not is_attestation_manifest(entry):
            continue
        target = entry.annotation(REFERENCE_DIGEST) or ""
        try:
            image = Digest(target)
        except UserError:
            raise UserError(f"attestation manifest {entry.digest} refers to {target!r}, "
                            "not a digest", code="bad-attestation") from None
        manifest = read_manifest(store, entry)
        for layer in manifest.layers:
            if layer.media_type != MEDIA_TYPE:
                continue
            if layer.size > MAX_STATEMENT:
                raise UserError(f"attestation {layer.digest} is {layer.size} bytes, more than "
                                f"{MAX_STATEMENT}", code="bad-attestation")
            try:
                data = store.read(layer.digest, what="attestation")
            except NotFoundError:
                raise NotFoundError(f"attestation {layer.digest} of {image} is not in the "
                                    "content store") from None
            verify_blob(data, layer, what="attestation")
            statement = Statement.parse(data, where=f"attestation {layer.digest}")
            out.append(Attestation(image=image, platform=platforms.get(image), layer=layer,
                                   statement=statement))
    return tuple(out)


def inspect_view(attestations: Sequence[Attestation], *, multi_platform: bool
                 ) -> dict[str, Any]:
    """What `imagetools inspect --format '{{json .SBOM}}'` / `.Provenance` show, as buildx:
    per platform ("linux/amd64") for a multi-platform index, else the one platform's value.
    SBOM: {"SPDX": document}; Provenance: {"SLSA": predicate}."""
    sbom: dict[str, dict[str, Any]] = {}
    provenance: dict[str, dict[str, Any]] = {}
    for att in attestations:
        key = str(att.platform) if att.platform is not None else str(att.image)
        predicate = json.loads(att.statement.predicate)
        kind = att.statement.predicate_type
        if kind == "https://spdx.dev/Document":
            sbom.setdefault(key, {}).setdefault("SPDX", predicate)
        elif kind.startswith("https://slsa.dev/provenance/"):
            provenance.setdefault(key, {}).setdefault("SLSA", predicate)
    if multi_platform:
        return {"SBOM": sbom, "Provenance": provenance}
    return {"SBOM": next(iter(sbom.values()), None),
            "Provenance": next(iter(provenance.values()), None)}

"""Views of images in the content store, and the SBOM statement of a scan."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import BinaryIO, Literal

from pybuild.attest.intoto import STATEMENT_V01, Statement, StatementType, Subject
from pybuild.attest.sbom import cyclonedx, spdx
from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.model import Inventory
from pybuild.content.store import ContentStore
from pybuild.content.walk import read_manifest
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor

SbomFormat = Literal["spdx", "cyclonedx"]


def image_view(store: ContentStore, manifest: Descriptor, *, name: str = "") -> LayerStackView:
    """The filesystem of the image manifest `manifest`, read from its layer blobs (each
    blob's digest is checked as it is read)."""
    parsed = read_manifest(store, manifest)
    layers = []
    for i, layer in enumerate(parsed.layers):
        if layer.media_type not in mt.LAYER_TYPES:
            continue  # not a filesystem layer (e.g. an artifact's blob)

        def opener(desc: Descriptor = layer) -> BinaryIO:
            return store.open(desc.digest, what="layer")

        layers.append(Layer(open=opener, digest=str(layer.digest),
                            name=f"layer {i} ({layer.digest.short})"))
    return LayerStackView(layers, name=name or str(manifest.digest))


def sbom_statement(inventory: Inventory, subjects: Sequence[Subject], *, subject: spdx.Subject,
                   created: datetime | int, fmt: SbomFormat = "spdx",
                   statement_type: StatementType = STATEMENT_V01) -> Statement:
    """The in-toto statement BuildKit attaches for an SBOM (SPDX by default)."""
    if fmt == "cyclonedx":
        doc = cyclonedx.cyclonedx_document(inventory, subject=subject, created=created)
        return Statement.of(cyclonedx.PREDICATE_TYPE, doc, subjects,
                            statement_type=statement_type)
    document = spdx.spdx_document(inventory, subject=subject, created=created)
    return Statement.of(spdx.PREDICATE_TYPE, document, subjects, statement_type=statement_type)

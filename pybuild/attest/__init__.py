"""Supply-chain attestations, as BuildKit attaches them: SBOMs, SLSA provenance, manifests.

The API a build calls (names load with their module on first use):

- SBOM: `scan(view) -> Inventory` over a `DirectoryView(root)` or a `LayerStackView`
  (`image_view(store, manifest_descriptor)` for an image in the content store);
  `sbom_statement(inventory, subjects, subject=SbomSubject(...), created=...)`.
- Provenance: `ProvenanceInput(...)` (frozen; what the build collected) and
  `provenance_statement(input, subjects, mode="max", version="v0.2")`.
- Subjects: `image_subjects(image_names, platform, manifest_digest)`.
- Attachment: `attach(store, image_manifest_descriptors, {manifest_digest: [statements]})`
  -> the result index; `image_manifests(index)`; `read_attestations(store, index_desc)`;
  `inspect_view(attestations, multi_platform=...)`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pybuild.attest.intoto import Statement, Subject, image_subjects
    from pybuild.attest.manifest import (
        Attestation,
        attach,
        image_manifests,
        inspect_view,
        read_attestations,
        write_attestation_manifest,
    )
    from pybuild.attest.provenance import (
        GitMaterial,
        HttpMaterial,
        ImageMaterial,
        ProvenanceInput,
        SourceFile,
    )
    from pybuild.attest.provenance import statement as provenance_statement
    from pybuild.attest.sbom.fsview import DirectoryView, Layer, LayerStackView
    from pybuild.attest.sbom.image import image_view, sbom_statement
    from pybuild.attest.sbom.model import Inventory, Package
    from pybuild.attest.sbom.scan import scan
    from pybuild.attest.sbom.spdx import Subject as SbomSubject

_HOME = {
    "Statement": ("intoto", "Statement"), "Subject": ("intoto", "Subject"),
    "image_subjects": ("intoto", "image_subjects"),
    "Attestation": ("manifest", "Attestation"), "attach": ("manifest", "attach"),
    "image_manifests": ("manifest", "image_manifests"),
    "inspect_view": ("manifest", "inspect_view"),
    "read_attestations": ("manifest", "read_attestations"),
    "write_attestation_manifest": ("manifest", "write_attestation_manifest"),
    "GitMaterial": ("provenance", "GitMaterial"), "HttpMaterial": ("provenance", "HttpMaterial"),
    "ImageMaterial": ("provenance", "ImageMaterial"),
    "ProvenanceInput": ("provenance", "ProvenanceInput"),
    "SourceFile": ("provenance", "SourceFile"),
    "provenance_statement": ("provenance", "statement"),
    "DirectoryView": ("sbom.fsview", "DirectoryView"), "Layer": ("sbom.fsview", "Layer"),
    "LayerStackView": ("sbom.fsview", "LayerStackView"),
    "image_view": ("sbom.image", "image_view"), "sbom_statement": ("sbom.image", "sbom_statement"),
    "Inventory": ("sbom.model", "Inventory"), "Package": ("sbom.model", "Package"),
    "scan": ("sbom.scan", "scan"), "SbomSubject": ("sbom.spdx", "Subject"),
}

__all__ = [
    "Attestation",
    "DirectoryView",
    "GitMaterial",
    "HttpMaterial",
    "ImageMaterial",
    "Inventory",
    "Layer",
    "LayerStackView",
    "Package",
    "ProvenanceInput",
    "SbomSubject",
    "SourceFile",
    "Statement",
    "Subject",
    "attach",
    "image_manifests",
    "image_subjects",
    "image_view",
    "inspect_view",
    "provenance_statement",
    "read_attestations",
    "sbom_statement",
    "scan",
    "write_attestation_manifest",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home[0]}"), home[1])

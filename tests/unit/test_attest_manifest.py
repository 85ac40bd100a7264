"""Attestation manifests in an index: written as BuildKit writes them, skipped by platform
resolution, read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.attest.intoto import Statement, image_subjects
from pybuild.attest.manifest import (
    ATTESTATION_MANIFEST,
    REFERENCE_DIGEST,
    REFERENCE_TYPE,
    attach,
    attestation_config,
    image_manifests,
    inspect_view,
    read_attestations,
)
from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_index, read_manifest, resolve_platform
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform

PLATFORMS = (Platform(os="linux", architecture="amd64"),
             Platform(os="linux", architecture="arm64"))


def _image(store: ContentStore, platform: Platform) -> Descriptor:
    config = ImageConfig(architecture=platform.architecture, os=platform.os).encode()
    manifest = Manifest(media_type=mt.OCI_MANIFEST,
                        config=Descriptor(media_type=mt.OCI_CONFIG, digest=store.write(config),
                                          size=len(config)), layers=()).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(manifest),
                      size=len(manifest), platform=platform)


def _statements(desc: Descriptor) -> list[Statement]:
    subjects = image_subjects(["app:1"], desc.platform, desc.digest)
    return [Statement.of("https://slsa.dev/provenance/v0.2", {"buildType": "x"}, subjects),
            Statement.of("https://spdx.dev/Document", {"spdxVersion": "SPDX-2.3"}, subjects)]


@pytest.fixture
def attested(tmp_path: Path) -> tuple[ContentStore, Descriptor, list[Descriptor]]:
    store = ContentStore(tmp_path / "store")
    images = [_image(store, p) for p in PLATFORMS]
    index = attach(store, images, {d.digest: _statements(d) for d in images})
    return store, index, images


def test_index_layout_as_buildkit_writes_it(
        attested: tuple[ContentStore, Descriptor, list[Descriptor]]) -> None:
    store, index_desc, images = attested
    index = read_index(store, index_desc)
    assert index.media_type == mt.OCI_INDEX
    runnable, attestations = index.manifests[:2], index.manifests[2:]
    assert list(runnable) == images  # runnable manifests first, untouched
    for image, att in zip(images, attestations, strict=True):
        assert att.platform == Platform(os="unknown", architecture="unknown")
        assert dict(att.annotations) == {REFERENCE_TYPE: ATTESTATION_MANIFEST,
                                         REFERENCE_DIGEST: str(image.digest)}
        manifest = read_manifest(store, att)
        assert [dict(layer.annotations) for layer in manifest.layers] == [
            {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            {"in-toto.io/predicate-type": "https://spdx.dev/Document"}]
        assert {layer.media_type for layer in manifest.layers} == {"application/vnd.in-toto+json"}
        config = store.read(manifest.config.digest)
        assert config == attestation_config(manifest.layers)
        assert json.loads(config) == {"architecture": "unknown", "os": "unknown", "config": {},
                                      "rootfs": {"type": "layers", "diff_ids": [
                                          str(layer.digest) for layer in manifest.layers]}}
    assert image_manifests(index) == tuple(images)


def test_platform_resolution_picks_the_image_never_the_attestation(
        attested: tuple[ContentStore, Descriptor, list[Descriptor]]) -> None:
    store, index_desc, images = attested
    for platform, image in zip(PLATFORMS, images, strict=True):
        assert resolve_platform(store, index_desc, platform) == image
    with pytest.raises(NotFoundError):
        resolve_platform(store, index_desc, Platform(os="linux", architecture="s390x"))
    # platforms_of lists the attestation manifests too (as unknown/unknown): callers that
    # show or walk platforms must skip them (exporters/local.py does; `images` does not).
    listed = [str(p) for _, p in platforms_of(store, index_desc)]
    assert listed == ["linux/amd64", "linux/arm64", "unknown/unknown", "unknown/unknown"]


def test_read_back(attested: tuple[ContentStore, Descriptor, list[Descriptor]]) -> None:
    store, index_desc, images = attested
    found = read_attestations(store, index_desc)
    assert [(a.image, a.platform, a.statement.predicate_type) for a in found] == [
        (images[0].digest, PLATFORMS[0], "https://slsa.dev/provenance/v0.2"),
        (images[0].digest, PLATFORMS[0], "https://spdx.dev/Document"),
        (images[1].digest, PLATFORMS[1], "https://slsa.dev/provenance/v0.2"),
        (images[1].digest, PLATFORMS[1], "https://spdx.dev/Document")]
    view = inspect_view(found, multi_platform=True)
    assert view["SBOM"]["linux/arm64"] == {"SPDX": {"spdxVersion": "SPDX-2.3"}}
    assert view["Provenance"]["linux/amd64"] == {"SLSA": {"buildType": "x"}}
    single = inspect_view(found[:2], multi_platform=False)
    assert single["SBOM"] == {"SPDX": {"spdxVersion": "SPDX-2.3"}}
    assert read_attestations(store, images[0]) == ()  # a manifest carries none


def test_a_corrupt_statement_blob_is_an_integrity_error(
        attested: tuple[ContentStore, Descriptor, list[Descriptor]]) -> None:
    store, index_desc, _ = attested
    att = read_index(store, index_desc).manifests[2]
    layer = read_manifest(store, att).layers[0]
    path = store.blob_path(layer.digest)
    path.chmod(0o644)
    path.write_bytes(b'{"_type": "tampered"}')
    with pytest.raises(IntegrityError):
        read_attestations(store, index_desc)


def test_attach_refuses_statements_about_images_not_in_the_index(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    image = _image(store, PLATFORMS[0])
    other = _image(store, PLATFORMS[1])
    with pytest.raises(UserError, match="not in the index"):
        attach(store, [image], {other.digest: _statements(other)})

"""Attested multi-platform images, exported as OCI layouts and read by skopeo and podman:
the attestation manifests are there, and every platform still pulls its image."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pybuild.attest.intoto import image_subjects
from pybuild.attest.manifest import attach, image_manifests, read_attestations
from pybuild.attest.provenance import ImageMaterial, ProvenanceInput, statement
from pybuild.attest.sbom.image import image_view, sbom_statement
from pybuild.attest.sbom.scan import scan
from pybuild.attest.sbom.spdx import Subject
from pybuild.content.store import ContentStore
from pybuild.content.walk import read_index, read_manifest
from pybuild.exporters.oci_layout import OCILayoutExporter
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.transports.oci_layout import read_oci_layout
from tests.tooling import require_tool

NAME = "localhost:5000/attested:1"


@pytest.fixture(scope="module")
def attested(base_layout: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[ContentStore, Descriptor, tuple[Descriptor, ...], Path]:
    root = tmp_path_factory.mktemp("attest")
    store = ContentStore(root / "content")
    index_desc = read_oci_layout(base_layout, store, None)
    images = image_manifests(read_index(store, index_desc))
    statements = {}
    for image in images:
        assert image.platform is not None
        subjects = image_subjects([NAME], image.platform, image.digest)
        inventory = scan(image_view(store, image))
        prov = ProvenanceInput(
            started_on=datetime(2024, 1, 1, tzinfo=UTC),
            finished_on=datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC),
            builder_platform=Platform(os="linux", architecture="amd64"),
            materials=(ImageMaterial(ref="docker.io/library/busybox:latest",
                                     digest=index_desc.digest, platform=image.platform),),
        )
        statements[image.digest] = [
            statement(prov, subjects, mode="min"),
            sbom_statement(inventory, subjects, subject=Subject(name=NAME, digest=image.digest),
                           created=1700000000),
        ]
    index = attach(store, images, statements)
    layout = root / "layout"
    OCILayoutExporter(layout, tar=False, names=(NAME,)).export(store, index)
    return store, index, images, layout


def _skopeo(*args: str) -> bytes:
    return subprocess.run([require_tool("skopeo"), *args], capture_output=True,
                          check=True).stdout


def test_skopeo_sees_the_attestation_manifests(
        attested: tuple[ContentStore, Descriptor, tuple[Descriptor, ...], Path]) -> None:
    _, index, images, layout = attested
    raw = _skopeo("inspect", "--raw", f"oci:{layout}:1")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == index.digest
    manifests = json.loads(raw)["manifests"]
    assert [m["digest"] for m in manifests[:2]] == [str(d.digest) for d in images]
    for entry, image in zip(manifests[2:], images, strict=True):
        assert entry["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert entry["annotations"] == {"vnd.docker.reference.digest": str(image.digest),
                                        "vnd.docker.reference.type": "attestation-manifest"}
        blob = layout / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
        att = json.loads(blob.read_bytes())
        assert [layer["annotations"]["in-toto.io/predicate-type"] for layer in att["layers"]] == [
            "https://slsa.dev/provenance/v0.2", "https://spdx.dev/Document"]


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_skopeo_copy_of_each_platform_gets_the_image(
        attested: tuple[ContentStore, Descriptor, tuple[Descriptor, ...], Path],
        tmp_path: Path, arch: str) -> None:
    _, _, images, layout = attested
    (image,) = [d for d in images if d.platform is not None and d.platform.architecture == arch]
    out = tmp_path / "copy"
    _skopeo("copy", "--override-os", "linux", "--override-arch", arch,
            f"oci:{layout}:1", f"oci:{out}:x")
    copied = json.loads((out / "index.json").read_text())["manifests"]
    assert [m["digest"] for m in copied] == [str(image.digest)]  # the image, not an attestation


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    podman = require_tool("podman")
    base = [podman, "--cgroup-manager=cgroupfs", "--events-backend=file"]
    if shutil.which("runc"):
        base += ["--runtime", "runc"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_podman_pull_of_each_platform_gets_the_image(
        attested: tuple[ContentStore, Descriptor, tuple[Descriptor, ...], Path],
        arch: str) -> None:
    store, _, images, layout = attested
    (image,) = [d for d in images if d.platform is not None and d.platform.architecture == arch]
    tag = f"localhost/pybuild-test/attested:{arch}-{uuid.uuid4().hex[:8]}"
    pulled = _podman("pull", "--platform", f"linux/{arch}", f"oci:{layout}:1")
    assert pulled.returncode == 0, pulled.stderr
    image_id = pulled.stdout.strip().splitlines()[-1]
    try:
        tagged = _podman("tag", image_id, tag)
        assert tagged.returncode == 0, tagged.stderr
        info = json.loads(_podman("image", "inspect", tag).stdout)[0]
        assert info["Architecture"] == arch
        # podman's image id is the config digest: that of this platform's image.
        assert info["Id"] == read_manifest(store, image).config.digest.hex
    finally:
        _podman("rmi", "--force", tag, image_id)


def test_attestations_read_back_from_the_exported_layout(
        attested: tuple[ContentStore, Descriptor, tuple[Descriptor, ...], Path],
        tmp_path: Path) -> None:
    _, index, images, layout = attested
    fresh = ContentStore(tmp_path / "fresh")
    assert read_oci_layout(layout, fresh, "1") == read_oci_layout(layout, fresh, NAME)
    found = read_attestations(fresh, read_oci_layout(layout, fresh, "1"))
    assert {(a.image, a.statement.predicate_type) for a in found} == {
        (d.digest, t) for d in images
        for t in ("https://slsa.dev/provenance/v0.2", "https://spdx.dev/Document")}
    sbom = [json.loads(a.statement.predicate) for a in found
            if a.statement.predicate_type == "https://spdx.dev/Document"]
    assert all(doc["spdxVersion"] == "SPDX-2.3" for doc in sbom)
    assert index.digest == read_oci_layout(layout, fresh, "1").digest


def test_converted_images_keep_their_attestations(
        attested: tuple[ContentStore, Descriptor, tuple[Descriptor, ...], Path]) -> None:
    """An output that rewrites the image manifests (here: every layer recompressed)
    points the attestation manifests at the new digests; Docker media types refuse
    them, as BuildKit does."""
    from pybuild.errors import UserError
    from pybuild.exporters.convert import Conversion, convert_image
    from pybuild.layers.recompress import LayerCompression
    from pybuild.oci.validate import validate_image

    store, index, images, _ = attested
    zstd = convert_image(store, index, Conversion(compression=LayerCompression(
        kind="zstd", force=True)))
    new_images = image_manifests(read_index(store, zstd))
    assert {d.digest for d in new_images}.isdisjoint(d.digest for d in images)
    found = read_attestations(store, zstd)
    assert {a.image for a in found} == {d.digest for d in new_images}
    assert len(found) == len(read_attestations(store, index))
    for image in new_images:  # (the validator reads image manifests, not attestations)
        validate_image(store, image)
    with pytest.raises(UserError, match="cannot export attestations with oci-mediatypes"):
        convert_image(store, index, Conversion(oci=False))

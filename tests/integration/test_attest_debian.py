"""The SBOM of a real Debian 12 image (mmdebstrap minbase + apt, pip and npm layers) lists
exactly what the package managers themselves say is installed, and spdx-tools validates it.

The expectations come from independent readers of the same filesystem: `dpkg-query
--admindir`, `pip list --path`, `npm ls --json`. The image is scanned twice, once as its
layer blobs in a content store, once unpacked by pybuild's layer applier: both must agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.attest.sbom.fsview import DirectoryView
from pybuild.attest.sbom.image import image_view
from pybuild.attest.sbom.model import Inventory
from pybuild.attest.sbom.scan import scan
from pybuild.attest.sbom.spdx import Subject, encode, spdx_document
from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.layers.apply import apply_layer_file
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from testdata.make_attest_fixtures import Entry, tar_layer
from testdata.make_debian import (
    APT_PACKAGES,
    NPM_PREFIX,
    PIP_TARGET,
    DebianFixture,
    build_debian_fixture,
)
from tests.tooling import require, require_tool


@dataclass(frozen=True)
class Image:
    store: ContentStore
    manifest: Descriptor
    layers: tuple[Descriptor, ...]
    rootfs: Path


@pytest.fixture(scope="module")
def debian() -> DebianFixture:
    require_tool("mmdebstrap")
    require_tool("npm")
    return build_debian_fixture()


def _image(store: ContentStore, layer_files: list[Path] | list[bytes]) -> tuple[
        Descriptor, tuple[Descriptor, ...]]:
    layers = []
    for item in layer_files:
        if isinstance(item, Path):
            with open(item, "rb") as f:
                digest = store.copy_from(f)
        else:
            digest = store.write(item)
        layers.append(Descriptor(media_type=mt.OCI_LAYER, digest=digest,
                                 size=store.size(digest)))
    config = ImageConfig(architecture="amd64", os="linux",
                         diff_ids=tuple(d.digest for d in layers)).encode()
    manifest = Manifest(media_type=mt.OCI_MANIFEST,
                        config=Descriptor(media_type=mt.OCI_CONFIG, digest=store.write(config),
                                          size=len(config)), layers=tuple(layers)).encode()
    return (Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(manifest),
                       size=len(manifest)), tuple(layers))


@pytest.fixture(scope="module")
def image(debian: DebianFixture, tmp_path_factory: pytest.TempPathFactory) -> Image:
    require("root")  # the base has device nodes; unpacking it needs mknod
    root = tmp_path_factory.mktemp("debian-sbom")
    store = ContentStore(root / "content")
    manifest, layers = _image(store, list(debian.layers))
    rootfs = root / "rootfs"
    rootfs.mkdir()
    for layer in debian.layers:
        apply_layer_file(str(layer), str(rootfs))
    return Image(store=store, manifest=manifest, layers=layers, rootfs=rootfs)


@pytest.fixture(scope="module")
def from_layers(image: Image) -> Inventory:
    return scan(image_view(image.store, image.manifest))


def _dpkg_installed(admindir: Path) -> set[tuple[str, str, str]]:
    out = subprocess.run(
        [require_tool("dpkg-query"), f"--admindir={admindir}", "-W",
         "-f=${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=True).stdout
    return {tuple(line.split("\t")[:3]) for line in out.splitlines()  # type: ignore[misc]
            if line.split("\t")[3].startswith("ii")}


def _types(inv: Inventory) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for p in inv.packages:
        out.setdefault(p.type, set()).add((p.name, p.version))
    return out


def test_debian_packages_are_exactly_dpkgs(image: Image, from_layers: Inventory,
                                           debian: DebianFixture, tmp_path: Path) -> None:
    installed = _dpkg_installed(image.rootfs / "var" / "lib" / "dpkg")
    assert {(p.name, p.version, p.architecture) for p in from_layers.packages
            if p.type == "deb"} == installed
    # ... and the apt layer added exactly the two packages to the base's set.
    base_db = tmp_path / "base-dpkg"
    base_db.mkdir()
    with tarfile.open(debian.base_tar) as tar:
        member = tar.extractfile("./var/lib/dpkg/status")
        assert member is not None
        (base_db / "status").write_bytes(member.read())
    added = {n for n, _, _ in installed} - {n for n, _, _ in _dpkg_installed(base_db)}
    assert added == set(APT_PACKAGES)
    assert from_layers.distro is not None and from_layers.distro.qualifier == "debian-12"
    by_name = {p.name: p for p in from_layers.packages if p.type == "deb"}
    for name in APT_PACKAGES:
        pkg = by_name[name]
        assert pkg.purl == f"pkg:deb/debian/{name}@{pkg.version}?arch=amd64&distro=debian-12"


def test_owned_files_carry_their_md5_and_layer(image: Image, from_layers: Inventory) -> None:
    hello = next(p for p in from_layers.packages if p.name == "hello")
    files = {f.path: f for f in hello.files}
    binary = files["/usr/bin/hello"]
    actual = hashlib.md5((image.rootfs / "usr/bin/hello").read_bytes()).hexdigest()
    assert dict(binary.checksums) == {"MD5": actual}
    assert binary.layer == str(image.layers[1].digest)  # the apt layer
    assert "GPL" in " ".join(hello.licenses)
    libc = next(p for p in from_layers.packages if p.name == "libc6")
    assert libc.files  # the base layer's packages own files too
    assert {f.layer for f in libc.files} <= {str(d.digest) for d in image.layers}


def test_python_packages_are_exactly_pips(image: Image, from_layers: Inventory) -> None:
    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check",
         "--path", str(image.rootfs / PIP_TARGET)],
        capture_output=True, text=True, check=True).stdout)
    assert _types(from_layers)["python"] == {(p["name"].lower(), p["version"]) for p in listed}
    purls = {p.purl for p in from_layers.packages if p.type == "python"}
    assert purls == {f"pkg:pypi/{p['name'].lower()}@{p['version']}" for p in listed}


def test_npm_packages_are_exactly_npms(image: Image, from_layers: Inventory) -> None:
    tree = json.loads(subprocess.run(
        [require_tool("npm"), "ls", "--json", "--all", "--prefix",
         str(image.rootfs / NPM_PREFIX)], capture_output=True, text=True, check=True).stdout)
    expected = {(name, dep["version"]) for name, dep in tree["dependencies"].items()}
    assert _types(from_layers)["npm"] == expected
    (ms,) = [p for p in from_layers.packages if p.type == "npm"]
    assert ms.purl == f"pkg:npm/ms@{ms.version}"
    # npm 11 leaves `resolved` out of lock files for the default registry; the integrity
    # hash is always there.
    assert ms.download_location in ("", "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz")
    assert ms.checksums and ms.checksums[0][0] == "SHA512"


def test_nothing_else_is_reported(from_layers: Inventory) -> None:
    assert set(_types(from_layers)) == {"deb", "python", "npm"}
    assert from_layers.warnings == ()


def test_the_unpacked_tree_gives_the_same_inventory(image: Image,
                                                    from_layers: Inventory) -> None:
    from_dir = scan(DirectoryView(image.rootfs))

    def strip(inv: Inventory) -> list[object]:
        return [(p.purl, p.location, p.licenses, tuple((f.path, f.checksums) for f in p.files))
                for p in inv.packages]

    assert strip(from_dir) == strip(from_layers)


def test_a_whiteout_layer_removes_a_package(image: Image, debian: DebianFixture,
                                            tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    gone = tar_layer([Entry(f"{NPM_PREFIX}/node_modules/ms", "whiteout"),
                      Entry(f"{PIP_TARGET}", "opaque")])
    manifest, _ = _image(store, [*debian.layers, gone])
    inv = scan(image_view(store, manifest))
    assert set(_types(inv)) == {"deb"}


def test_spdx_tools_validates_the_document(image: Image, from_layers: Inventory,
                                           tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    doc = spdx_document(from_layers, subject=Subject(name="debian-sbom-test",
                                                    digest=image.manifest.digest),
                        created=1700000000)
    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(encode(doc))
    messages = validate_full_spdx_document(parse_file(str(path)))
    assert [m.validation_message for m in messages[:5]] == []
    names = {p["name"] for p in doc["packages"]}
    assert set(APT_PACKAGES) | {"six", "idna", "ms"} <= names
    # The same scan gives the same bytes.
    again = spdx_document(scan(image_view(image.store, image.manifest)),
                          subject=Subject(name="debian-sbom-test", digest=image.manifest.digest),
                          created=1700000000)
    assert encode(again) == encode(doc)


def test_the_base_layout_is_a_valid_oci_image(debian: DebianFixture) -> None:
    raw = subprocess.run([require_tool("skopeo"), "inspect", "--raw",
                          f"oci:{debian.layout}:bookworm"], capture_output=True, check=True).stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    (layer,) = manifest["layers"]
    blob = debian.layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    assert Digest.from_file(str(blob))[0] == layer["digest"]
    with tarfile.open(fileobj=io.BytesIO(blob.read_bytes()[:1 << 20]), mode="r|gz") as tar:
        assert tar.next() is not None

"""SPDX 2.3 and CycloneDX 1.5 documents: valid by the reference validators, deterministic,
licences mapped to SPDX ids or extracted LicenseRefs."""

from __future__ import annotations

import json
from pathlib import Path

from pybuild.attest.sbom.cyclonedx import cyclonedx_document
from pybuild.attest.sbom.licenses import is_expression, to_expression
from pybuild.attest.sbom.model import Distro, Inventory, OwnedFile, Package
from pybuild.attest.sbom.spdx import ZERO_SHA1, Subject, encode, spdx_document

LAYER = "sha256:" + "c" * 64
INVENTORY = Inventory(
    distro=Distro(id="debian", version_id="12", pretty_name="Debian GNU/Linux 12 (bookworm)"),
    packages=(
        Package(type="deb", name="tree", version="2.1.0-1", found_by="dpkg-db-scanner",
                purl="pkg:deb/debian/tree@2.1.0-1?arch=amd64&distro=debian-12",
                location="/var/lib/dpkg/status", licenses=("GPL-2+", "LGPL-2.1+"),
                supplier="Person: Florian Ernst (florian@debian.org)",
                files=(OwnedFile(path="/usr/bin/tree", checksums=(("MD5", "60" * 16),),
                                 layer=LAYER),)),
        Package(type="deb", name="bash", version="5.2.15-2+b13", found_by="dpkg-db-scanner",
                purl="pkg:deb/debian/bash@5.2.15-2%2Bb13?arch=amd64&distro=debian-12",
                location="/var/lib/dpkg/status",
                licenses=("GPL-3+ with Bison exception", "permissive")),
        Package(type="npm", name="ms", version="2.1.3", purl="pkg:npm/ms@2.1.3",
                found_by="javascript-package-scanner",
                location="/opt/app/node_modules/ms/package.json", licenses=("MIT",),
                download_location="https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
                checksums=(("SHA512", "ab" * 64),)),
        Package(type="python", name="six", version="1.16.0", purl="pkg:pypi/six@1.16.0",
                found_by="python-installed-package-scanner", location="/x/METADATA",
                licenses=("MIT OR Apache-2.0",),
                files=(OwnedFile(path="/x/six.py", checksums=(("SHA256", "4c" * 32),)),
                       OwnedFile(path="/usr/bin/tree"))),  # a file two packages own
    ),
)
SUBJECT = Subject(name="localhost:5000/app:1", digest="sha256:" + "d" * 64)


def test_spdx_document_is_valid(tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(encode(spdx_document(INVENTORY, subject=SUBJECT, created=1700000000)))
    messages = validate_full_spdx_document(parse_file(str(path)))
    assert [m.validation_message for m in messages] == []


def test_spdx_fields_follow_syft_and_buildkit() -> None:
    doc = spdx_document(INVENTORY, subject=SUBJECT, created=1700000000)
    assert doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    packages = {p["name"]: p for p in doc["packages"]}
    root = packages["localhost:5000/app:1"]
    assert root["SPDXID"] == "SPDXRef-DocumentRoot-Image-localhost-5000-app-1"
    assert root["primaryPackagePurpose"] == "CONTAINER"
    tree = packages["tree"]
    assert tree["licenseDeclared"] == "GPL-2.0-or-later AND LGPL-2.1-or-later"
    assert tree["supplier"] == "Person: Florian Ernst (florian@debian.org)"
    assert tree["externalRefs"] == [{"referenceCategory": "PACKAGE-MANAGER",
                                     "referenceType": "purl",
                                     "referenceLocator": INVENTORY.packages[0].purl}]
    assert tree["sourceInfo"] == "acquired package info from DPKG DB: /var/lib/dpkg/status"
    assert packages["six"]["licenseDeclared"] == "MIT OR Apache-2.0"
    assert packages["bash"]["licenseDeclared"] == (
        "LicenseRef-GPL-3-with-Bison-exception AND LicenseRef-permissive")
    refs = {x["licenseId"]: x["extractedText"] for x in doc["hasExtractedLicensingInfos"]}
    assert refs == {"LicenseRef-GPL-3-with-Bison-exception": "GPL-3+ with Bison exception",
                    "LicenseRef-permissive": "permissive"}
    (tree_file, _six_file) = sorted(doc["files"], key=lambda f: f["fileName"])
    assert tree_file["fileName"] == "usr/bin/tree"
    assert tree_file["comment"] == f"layerID: {LAYER}"
    assert tree_file["checksums"][0] == {"algorithm": "SHA1", "checksumValue": ZERO_SHA1}
    contains = [(r["spdxElementId"], r["relatedSpdxElement"]) for r in doc["relationships"]
                if r["relatedSpdxElement"] == tree_file["SPDXID"]]
    assert {a for a, _ in contains} == {tree["SPDXID"], packages["six"]["SPDXID"]}
    assert {"spdxElementId": "SPDXRef-DOCUMENT", "relatedSpdxElement": root["SPDXID"],
            "relationshipType": "DESCRIBES"} in doc["relationships"]


def test_documents_are_deterministic_but_the_namespace_follows_the_time() -> None:
    one = encode(spdx_document(INVENTORY, subject=SUBJECT, created=1700000000))
    assert one == encode(spdx_document(INVENTORY, subject=SUBJECT, created=1700000000))
    other = spdx_document(INVENTORY, subject=SUBJECT, created=1700000001)
    assert json.loads(one)["documentNamespace"] != other["documentNamespace"]
    assert json.loads(one)["documentNamespace"].startswith(
        "https://spdx.org/spdxdocs/pybuild-localhost-5000-app-1-")


def test_cyclonedx_document_is_valid() -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    doc = cyclonedx_document(INVENTORY, subject=SUBJECT, created=1700000000)
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(doc)) is None
    components = {c["name"]: c for c in doc["components"]}
    assert components["debian"]["type"] == "operating-system"
    assert components["tree"]["licenses"] == [{"license": {"id": "GPL-2.0-or-later"}},
                                              {"license": {"id": "LGPL-2.1-or-later"}}]
    assert components["six"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert components["ms"]["hashes"] == [{"alg": "SHA-512", "content": "ab" * 64}]
    assert doc == cyclonedx_document(INVENTORY, subject=SUBJECT, created=1700000000)


def test_licence_expressions() -> None:
    assert is_expression("MIT OR (Apache-2.0 WITH LLVM-exception)")
    assert not is_expression("MIT OR")
    assert not is_expression("GPL-3+ with Bison exception")
    assert to_expression("Expat") == ("MIT", True)
    assert to_expression("mit") == ("MIT", True)
    assert to_expression("Some Custom License") == ("LicenseRef-Some-Custom-License", False)

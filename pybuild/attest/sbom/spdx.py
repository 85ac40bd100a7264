"""SPDX 2.3 JSON, the document BuildKit attaches (predicate `https://spdx.dev/Document`).

Field conventions follow Syft's SPDX output (what BuildKit's default scanner writes): a root
package for what was scanned (`SPDXRef-DocumentRoot-Image-…`/`-Directory-…`) that the
document DESCRIBES and that CONTAINS every package; packages with `externalRefs` purl, the
scanner in `sourceInfo`, NOASSERTION where nothing is known; each owned file once, with a
relative name, a `layerID: DIGEST` comment when the layer is known (as BuildKit's
supplementSBOM adds) and CONTAINS from each package that owns it. SPDX requires a SHA1 for
every file; where the database records none (dpkg has MD5s, pip SHA256s), the SHA1 is
all zeros, as Syft writes it for files it did not hash, and the recorded checksums follow.

Output is deterministic: ids are derived from the content, lists are sorted, and the
document namespace is a UUID over the content and `created` (which the caller passes:
SOURCE_DATE_EPOCH-friendly), so the same scan gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pybuild import __version__
from pybuild.attest.sbom.licenses import to_expression
from pybuild.attest.sbom.model import Inventory, OwnedFile, Package

SPDX_VERSION = "SPDX-2.3"
PREDICATE_TYPE = "https://spdx.dev/Document"
NOASSERTION = "NOASSERTION"
ZERO_SHA1 = "0" * 40
_ID_CHARS = re.compile(r"[^a-zA-Z0-9.-]")
_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # the URL namespace
_SOURCE_INFO = {
    "deb": "acquired package info from DPKG DB",
    "apk": "acquired package info from APK DB",
    "rpm": "acquired package info from RPM DB",
    "python": "acquired package info from installed python package manifest file",
    "npm": "acquired package info from installed node module manifest file",
    "go-module": "acquired package info from go module information",
    "java-archive": "acquired package info from installed java archive",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """What was scanned: an image (name and manifest digest) or a directory."""

    name: str
    digest: str = ""  # "sha256:…" for an image
    kind: str = "image"  # "image" | "directory"


def element_id(*parts: str) -> str:
    return "SPDXRef-" + "-".join(_ID_CHARS.sub("-", p) for p in parts if p)


def _hash16(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def package_id(pkg: Package) -> str:
    return element_id("Package", pkg.type, pkg.name, _hash16(*pkg.sort_key))


def file_id(path: str) -> str:
    return element_id("File", path.strip("/").replace("/", "-")[-80:], _hash16(path))


def rfc3339(when: datetime | int) -> str:
    moment = datetime.fromtimestamp(when, UTC) if isinstance(when, int) else when
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Licenses:
    """Declared licences as SPDX expressions; unknown names become extracted LicenseRefs."""

    def __init__(self) -> None:
        self.extracted: dict[str, str] = {}

    def declared(self, licenses: tuple[str, ...]) -> str:
        if not licenses:
            return NOASSERTION
        parts: list[str] = []
        for name in licenses:
            expression, known = to_expression(name)
            if not known:
                self.extracted.setdefault(expression, name)
            if expression not in parts:
                parts.append(expression)
        if len(parts) == 1:
            return parts[0]
        return " AND ".join(f"({p})" if " " in p else p for p in parts)


def _package(pkg: Package, licenses: _Licenses) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": pkg.name,
        "SPDXID": package_id(pkg),
        "versionInfo": pkg.version,
        "supplier": pkg.supplier or NOASSERTION,
        "downloadLocation": pkg.download_location or NOASSERTION,
        "filesAnalyzed": bool(pkg.files),
        "sourceInfo": f"{_SOURCE_INFO.get(pkg.type, 'acquired package info')}: {pkg.location}",
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": licenses.declared(pkg.licenses),
        "copyrightText": NOASSERTION,
    }
    if pkg.homepage.startswith(("http://", "https://")):
        out["homepage"] = pkg.homepage
    if pkg.checksums:
        out["checksums"] = [{"algorithm": a, "checksumValue": v} for a, v in pkg.checksums]
    if pkg.purl:
        out["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER",
                                "referenceType": "purl", "referenceLocator": pkg.purl}]
    return out


def _file(owned: OwnedFile) -> dict[str, Any]:
    sums = dict(owned.checksums)
    checksums = [{"algorithm": "SHA1", "checksumValue": sums.pop("SHA1", ZERO_SHA1)}]
    checksums += [{"algorithm": a, "checksumValue": v} for a, v in sorted(sums.items())]
    out: dict[str, Any] = {
        "fileName": owned.path.lstrip("/") or ".",
        "SPDXID": file_id(owned.path),
        "checksums": checksums,
        "licenseConcluded": NOASSERTION,
        "copyrightText": NOASSERTION,
    }
    if owned.layer:
        out["comment"] = f"layerID: {owned.layer}"
    return out


def _root(subject: Subject) -> dict[str, Any]:
    kind = "Image" if subject.kind == "image" else "Directory"
    out: dict[str, Any] = {
        "name": subject.name,
        "SPDXID": element_id("DocumentRoot", kind, subject.name),
        "supplier": NOASSERTION,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER" if subject.kind == "image" else "FILE",
    }
    if subject.digest:
        algo, _, hexdigest = subject.digest.partition(":")
        out["versionInfo"] = subject.digest
        out["checksums"] = [{"algorithm": algo.upper(), "checksumValue": hexdigest}]
    return out


def spdx_document(inventory: Inventory, *, subject: Subject, created: datetime | int,
                  include_files: bool = True, tool: str = f"pybuild-{__version__}"
                  ) -> dict[str, Any]:
    """The SPDX 2.3 document (a JSON-ready dict) for a scan of `subject`."""
    licenses = _Licenses()
    root = _root(subject)
    packages = [_package(p, licenses) for p in inventory.packages]
    relationships: list[dict[str, str]] = []
    files: dict[str, dict[str, Any]] = {}
    for pkg, entry in zip(inventory.packages, packages, strict=True):
        relationships.append({"spdxElementId": root["SPDXID"],
                              "relatedSpdxElement": entry["SPDXID"],
                              "relationshipType": "CONTAINS"})
        if not include_files:
            entry["filesAnalyzed"] = False
            continue
        for owned in pkg.files:
            spdx_file = files.setdefault(owned.path, _file(owned))
            relationships.append({"spdxElementId": entry["SPDXID"],
                                  "relatedSpdxElement": spdx_file["SPDXID"],
                                  "relationshipType": "CONTAINS"})
    relationships.append({"spdxElementId": "SPDXRef-DOCUMENT",
                          "relatedSpdxElement": root["SPDXID"],
                          "relationshipType": "DESCRIBES"})
    timestamp = rfc3339(created)
    doc: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.name,
        "documentNamespace": "",
        "creationInfo": {
            "creators": ["Organization: pybuild", f"Tool: {tool}"],
            "created": timestamp,
        },
        "packages": [*packages, root],
        "files": [files[p] for p in sorted(files)],
        "relationships": relationships,
    }
    if licenses.extracted:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "extractedText": text, "name": text}
            for ref, text in sorted(licenses.extracted.items())
        ]
    if not doc["files"]:
        del doc["files"]
    content = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    unique = uuid.uuid5(_NAMESPACE, hashlib.sha256(content).hexdigest())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", subject.name).strip("-") or "sbom"
    doc["documentNamespace"] = f"https://spdx.org/spdxdocs/pybuild-{safe}-{unique}"
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    """Byte-stable JSON for a document (sorted keys, no insignificant whitespace)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

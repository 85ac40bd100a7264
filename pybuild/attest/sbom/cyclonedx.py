"""CycloneDX 1.5 JSON (BuildKit's `https://cyclonedx.org/bom` predicate), as an option.

One component per package (`library`, or `operating-system` for the distro), its purl as
`bom-ref` (made unique by a `package-id` qualifier, as Syft does), licences as SPDX ids,
names, or one expression; the scanned image or directory is `metadata.component`.
Deterministic like the SPDX writer: the serial number is a UUID over the content.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from pybuild import __version__
from pybuild.attest.sbom.licenses import is_expression, spdx_id
from pybuild.attest.sbom.model import Inventory, Package
from pybuild.attest.sbom.spdx import Subject, rfc3339

SPEC_VERSION = "1.5"
PREDICATE_TYPE = "https://cyclonedx.org/bom"
_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")


def _licenses(pkg: Package) -> list[dict[str, Any]]:
    if not pkg.licenses:
        return []
    compound = [x for x in pkg.licenses if is_expression(x) and spdx_id(x) is None]
    if compound:
        parts = list(dict.fromkeys(spdx_id(x) or x for x in pkg.licenses))
        if len(parts) == 1:
            return [{"expression": parts[0]}]
        return [{"expression": " AND ".join(f"({p})" if " " in p else p for p in parts)}]
    out: list[dict[str, Any]] = []
    for name in dict.fromkeys(pkg.licenses):
        known = spdx_id(name)
        out.append({"license": {"id": known} if known else {"name": name}})
    return out


def _ref(pkg: Package) -> str:
    package_id = hashlib.sha256("\0".join(pkg.sort_key).encode()).hexdigest()[:16]
    base = pkg.purl or f"pkg:generic/{pkg.name}@{pkg.version}"
    return f"{base}{'&' if '?' in base else '?'}package-id={package_id}"


def _component(pkg: Package) -> dict[str, Any]:
    out: dict[str, Any] = {"bom-ref": _ref(pkg), "type": "library", "name": pkg.name,
                           "version": pkg.version}
    licenses = _licenses(pkg)
    if licenses:
        out["licenses"] = licenses
    if pkg.purl:
        out["purl"] = pkg.purl
    if pkg.checksums:
        names = {"SHA1": "SHA-1", "SHA256": "SHA-256", "SHA384": "SHA-384",
                 "SHA512": "SHA-512", "MD5": "MD5"}
        out["hashes"] = [{"alg": names[a], "content": v} for a, v in pkg.checksums
                         if a in names]
    if pkg.supplier:
        out["supplier"] = {"name": pkg.supplier.partition(": ")[2] or pkg.supplier}
    properties = [("pybuild:package:type", pkg.type), ("pybuild:package:foundBy", pkg.found_by),
                  ("pybuild:location:0:path", pkg.location)]
    if pkg.source:
        properties.append(("pybuild:package:source", pkg.source))
    out["properties"] = [{"name": k, "value": v} for k, v in properties if v]
    return out


def cyclonedx_document(inventory: Inventory, *, subject: Subject,
                       created: datetime | int) -> dict[str, Any]:
    components = [_component(p) for p in inventory.packages]
    distro = inventory.distro
    if distro is not None:
        os_component: dict[str, Any] = {
            "bom-ref": f"os:{distro.id}@{distro.version_id}", "type": "operating-system",
            "name": distro.id, "version": distro.version_id,
        }
        if distro.pretty_name:
            os_component["description"] = distro.pretty_name
        components.append(os_component)
    root: dict[str, Any] = {"bom-ref": f"root:{subject.name}",
                            "type": "container" if subject.kind == "image" else "file",
                            "name": subject.name}
    if subject.digest:
        root["version"] = subject.digest
    doc: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(created),
            "tools": {"components": [{"type": "application", "author": "pybuild",
                                      "name": "pybuild", "version": __version__}]},
            "component": root,
        },
        "components": components,
    }
    content = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["serialNumber"] = f"urn:uuid:{uuid.uuid5(_NAMESPACE, hashlib.sha256(content).hexdigest())}"
    return doc

"""Alpine packages: /lib/apk/db/installed, as Syft's apk cataloger reads it.

The database is blocks of `K:value` lines separated by blank lines: P name, V version,
A arch, L licence, o origin (source package), m maintainer, U url, then F (a directory) and
R (a file in it) with Z (its checksum, `Q1` + base64 of the SHA-1) for each owned file.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.licenses import is_expression
from pybuild.attest.sbom.model import OwnedFile, Package
from pybuild.attest.sbom.scanner import DB_LIMIT, Found, person, read_whole

INSTALLED = "/lib/apk/db/installed"


def records(text: str) -> Iterator[list[tuple[str, str]]]:
    block: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if block:
                yield block
            block = []
            continue
        key, sep, value = line.partition(":")
        if sep and len(key) == 1:
            block.append((key, value))
    if block:
        yield block


def _sha1(z: str) -> str:
    if not z.startswith("Q1"):
        return ""
    try:
        return base64.b64decode(z[2:], validate=True).hex()
    except (binascii.Error, ValueError):
        return ""


class ApkScanner:
    name = "apk-db-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        return read_whole(DB_LIMIT) if entry.path == INSTALLED else None

    def catalog(self, found: Found) -> Iterable[Package]:
        data = found.data(INSTALLED)
        if data is None:
            return []
        return [p for block in records(data.decode("utf-8", "replace"))
                if (p := self._package(found, block)) is not None]

    def _package(self, found: Found, block: list[tuple[str, str]]) -> Package | None:
        fields: dict[str, str] = {}
        files: dict[str, OwnedFile] = {}
        directory = ""
        last = ""
        for key, value in block:
            match key:
                case "F":
                    directory = value.strip("/")
                case "R":
                    last = "/" + (f"{directory}/{value}" if directory else value)
                    files[last] = found.owned(last)
                case "Z" if last:
                    sha1 = _sha1(value)
                    if sha1:
                        files[last] = found.owned(last, (("SHA1", sha1),))
                case _:
                    fields.setdefault(key, value)
        name, version = fields.get("P", ""), fields.get("V", "")
        if not name:
            return None
        origin = fields.get("o", "")
        distro = found.distro
        qualifiers = {"arch": fields.get("A", "")}
        if origin and origin != name:
            qualifiers["upstream"] = origin
        if distro is not None:
            qualifiers["distro"] = distro.qualifier
        declared = fields.get("L", "").strip()
        licenses: tuple[str, ...] = ()
        if declared:
            licenses = (declared,) if is_expression(declared) else tuple(declared.split())
        maintainer = fields.get("m", "")
        return Package(
            type="apk", name=name, version=version,
            purl=purl("apk", name, version,
                      namespace=(distro.id.lower() if distro is not None else "alpine"),
                      qualifiers=qualifiers),
            found_by=self.name, location=INSTALLED, licenses=licenses,
            files=tuple(files[p] for p in sorted(files)),
            supplier=person(maintainer),
            homepage=fields.get("U", ""), architecture=fields.get("A", ""), source=origin,
        )

"""Java archives (`*.jar`, `.war`, `.ear`, `.jpi`, `.hpi`): Maven coordinates inside them.

Each `META-INF/maven/GROUP/ARTIFACT/pom.properties` is a package
(`pkg:maven/GROUP/ARTIFACT@VERSION`); an archive without one is named from its manifest
(`Implementation-Title`/`Bundle-SymbolicName` + `-Version`), else not reported. Archives
nested one level deep (Spring Boot's BOOT-INF/lib, WEB-INF/lib) are read too. Only the
zip directory and these small members are read; every read is capped, so a zip bomb costs
a bounded amount.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.model import Package
from pybuild.attest.sbom.scanner import Found

SUFFIXES = (".jar", ".war", ".ear", ".jpi", ".hpi")
_SMALL = 1 << 20  # pom.properties, MANIFEST.MF
_NESTED = 64 << 20  # one nested archive
_NESTED_TOTAL = 512 << 20  # all nested archives of one file
_MAX_MEMBERS = 200_000


@dataclass(frozen=True, slots=True, kw_only=True)
class JavaArtifact:
    group: str
    artifact: str
    version: str
    where: str  # the archive (nested: "outer.jar:BOOT-INF/lib/inner.jar")
    license: str = ""


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    if info.file_size > cap:
        return None
    with zf.open(info) as member:
        data = member.read(cap + 1)  # the header's size may lie; the read may not
    return data if len(data) <= cap else None


def _properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def _manifest(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith(" ") and key:
            out[key] += line[1:]
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip()
            out.setdefault(key, v.strip())
    return out


def _scan_zip(zf: zipfile.ZipFile, where: str, *, nested: bool) -> list[JavaArtifact]:
    out: list[JavaArtifact] = []
    members = zf.infolist()[:_MAX_MEMBERS]
    manifest: dict[str, str] = {}
    budget = _NESTED_TOTAL
    for info in members:
        name = info.filename
        if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
            data = _read_capped(zf, info, _SMALL)
            if data is None:
                continue
            props = _properties(data.decode("utf-8", "replace"))
            group, artifact = props.get("groupId", ""), props.get("artifactId", "")
            version = props.get("version", "")
            if group and artifact and version:
                out.append(JavaArtifact(group=group, artifact=artifact, version=version,
                                        where=where))
        elif name == "META-INF/MANIFEST.MF":
            data = _read_capped(zf, info, _SMALL)
            if data is not None:
                manifest = _manifest(data.decode("utf-8", "replace"))
        elif nested and name.endswith(SUFFIXES) and 0 < info.file_size <= min(_NESTED, budget):
            data = _read_capped(zf, info, _NESTED)
            if data is None:
                continue
            budget -= len(data)
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as inner:
                    out.extend(_scan_zip(inner, f"{where}:{name}", nested=False))
            except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError):
                continue
    license_ = manifest.get("Bundle-License", "")
    if license_.startswith(("http://", "https://")):
        license_ = ""  # a URL, not a licence name
    if not any(a.where == where for a in out):
        title = (manifest.get("Implementation-Title") or manifest.get("Bundle-SymbolicName")
                 or "").split(";")[0].strip()
        version = manifest.get("Implementation-Version") or manifest.get("Bundle-Version") or ""
        if title and version:
            group = manifest.get("Implementation-Vendor-Id", "") or title
            out.append(JavaArtifact(group=group, artifact=title, version=version, where=where))
    # This archive's manifest licenses the artifacts found directly in it.
    return [dataclasses.replace(a, license=license_) if a.where == where and not a.license
            else a for a in out]


def read_archive(f: BinaryIO, where: str = "") -> tuple[JavaArtifact, ...]:
    try:
        with zipfile.ZipFile(f) as zf:
            return tuple(_scan_zip(zf, where, nested=True))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError):
        return ()


class JavaArchiveScanner:
    name = "java-archive-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        if entry.kind == "file" and entry.path.lower().endswith(SUFFIXES):
            return Wanted(analyze=read_archive, magic=b"PK", limit=1 << 30)
        return None

    def catalog(self, found: Found) -> Iterable[Package]:
        out: list[Package] = []
        for path, artifacts in found.results():
            if not isinstance(artifacts, tuple):
                continue
            for a in artifacts:
                if not isinstance(a, JavaArtifact):
                    continue
                location = path + a.where if a.where else path
                out.append(Package(
                    type="java-archive", name=a.artifact, version=a.version,
                    purl=purl("maven", a.artifact, a.version, namespace=a.group),
                    found_by=self.name, location=location,
                    licenses=(a.license,) if a.license else (),
                ))
        return out

"""What a scan finds: packages with their identity, licences and owned files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The ecosystems the scanners know (Syft's package types).
PackageType = Literal["deb", "apk", "rpm", "python", "npm", "go-module", "java-archive"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnedFile:
    """A file a package database records as the package's own, with what it says of it."""

    path: str  # absolute, as the database records it
    checksums: tuple[tuple[str, str], ...] = ()  # (SPDX algorithm name, lowercase hex)
    layer: str = ""  # the digest of the layer the file came from, when the view knows it


@dataclass(frozen=True, slots=True, kw_only=True)
class Package:
    type: PackageType
    name: str
    version: str
    purl: str
    found_by: str  # the scanner, e.g. "dpkg-db-scanner"
    location: str  # the evidence: the database or manifest the package was read from
    licenses: tuple[str, ...] = ()  # declared, as written (SPDX ids or free text)
    files: tuple[OwnedFile, ...] = ()
    supplier: str = ""  # "Person: NAME (EMAIL)" / "Organization: NAME", when declared
    download_location: str = ""
    homepage: str = ""
    checksums: tuple[tuple[str, str], ...] = ()  # of the package itself (npm integrity)
    architecture: str = ""
    source: str = ""  # the source package (deb Source, apk origin, rpm sourcerpm)

    @property
    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.type, self.name, self.version, self.purl, self.location)


@dataclass(frozen=True, slots=True, kw_only=True)
class Distro:
    """/etc/os-release of the scanned filesystem."""

    id: str
    version_id: str = ""
    version_codename: str = ""
    pretty_name: str = ""
    id_like: tuple[str, ...] = ()

    @property
    def qualifier(self) -> str:
        """The purl `distro` qualifier: "debian-12", "alpine-3.19.1"."""
        return f"{self.id}-{self.version_id}" if self.version_id else self.id

    def like(self, family: str) -> bool:
        return self.id == family or family in self.id_like


@dataclass(frozen=True, slots=True, kw_only=True)
class Inventory:
    """The packages of one filesystem, sorted; warnings name what could not be read."""

    packages: tuple[Package, ...]
    distro: Distro | None = None
    warnings: tuple[str, ...] = ()

"""RPM packages from rpm's sqlite database (Fedora 33+, RHEL 9, CentOS Stream 9, ...).

The database is read with Python's sqlite3 from the bytes in memory (deserialised, never
opened on disk, so the image's file is never written, nor its -wal/-shm siblings read:
rpm checkpoints on close, and an uncheckpointed WAL is rare in a built image), and each
`Packages.blob` is an rpm header (see rpmheader). The older BerkeleyDB (`Packages`) and
SUSE's ndb (`Packages.db`) formats are not read: the scan says so in a warning instead of
reporting no packages silently.
"""

from __future__ import annotations

import posixpath
import sqlite3
from collections.abc import Iterable

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.model import OwnedFile, Package
from pybuild.attest.sbom.rpmheader import (
    ARCH,
    BASENAMES,
    DIGEST_ALGOS,
    DIRINDEXES,
    DIRNAMES,
    EPOCH,
    FILEDIGESTALGO,
    FILEDIGESTS,
    LICENSE,
    MODULARITYLABEL,
    NAME,
    RELEASE,
    SOURCERPM,
    URL,
    VENDOR,
    VERSION,
    Header,
    parse_header,
)
from pybuild.attest.sbom.scanner import DB_LIMIT, Found, read_whole

_DIRS = ("/var/lib/rpm/", "/usr/lib/sysimage/rpm/")
SQLITE = "rpmdb.sqlite"
_UNREAD = {"Packages": "BerkeleyDB", "Packages.db": "ndb"}


def read_sqlite_headers(data: bytes) -> list[Header]:
    """Every package header in an rpmdb.sqlite image (ValueError if it is not one)."""
    if data[:16] == b"SQLite format 3\0" and data[18:20] == b"\x02\x02":
        # rpm keeps its database in WAL mode; a deserialised copy must say "rollback
        # journal" (file format bytes 18-19) or sqlite refuses to open it in memory.
        data = data[:18] + b"\x01\x01" + data[20:]
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        rows = conn.execute("SELECT blob FROM Packages ORDER BY hnum").fetchall()
    except sqlite3.Error as exc:
        raise ValueError(f"not an rpm sqlite database ({exc})") from None
    finally:
        conn.close()
    return [parse_header(bytes(blob)) for (blob,) in rows if isinstance(blob, bytes)]


class RpmScanner:
    name = "rpm-db-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        head, base = posixpath.split(entry.path)
        if head + "/" in _DIRS and base == SQLITE:
            return read_whole(DB_LIMIT)
        return None

    def catalog(self, found: Found) -> Iterable[Package]:
        out: list[Package] = []
        seen: set[str] = set()
        for directory in _DIRS:
            for base, fmt in _UNREAD.items():
                path = directory + base
                entry = found.tree.entries.get(path)
                if entry is not None and entry.kind == "file" and entry.size > 0:
                    found.warn(f"{path}: rpm database in {fmt} format is not read (only the "
                               "sqlite format is); its packages are missing from the SBOM")
            path = found.tree.resolve(directory + SQLITE) or ""
            data = found.data(path) if path and path not in seen else None
            if data is None:
                continue  # absent, or the same database through /var/lib/rpm's symlink
            seen.add(path)
            try:
                headers = read_sqlite_headers(data)
            except ValueError as exc:
                found.warn(f"{path}: {exc}")
                continue
            for header in headers:
                if header.string(NAME) == "gpg-pubkey":
                    continue  # imported signing keys are headers too, not packages
                out.append(self._package(found, header, path))
        return out

    def _package(self, found: Found, h: Header, location: str) -> Package:
        name, version, release = h.string(NAME), h.string(VERSION), h.string(RELEASE)
        epoch = h.integer(EPOCH)
        arch = h.string(ARCH)
        distro = found.distro
        namespace = distro.id if distro is not None else ""
        if namespace == "rhel":
            namespace = "redhat"
        elif namespace.startswith("opensuse"):
            namespace = "opensuse"
        qualifiers = {"arch": arch, "upstream": h.string(SOURCERPM)}
        if epoch is not None:
            qualifiers["epoch"] = str(epoch)
        if h.string(MODULARITYLABEL):
            qualifiers["rpmmod"] = h.string(MODULARITYLABEL)
        if distro is not None:
            qualifiers["distro"] = distro.qualifier
        full_version = f"{version}-{release}" if release else version
        shown = f"{epoch}:{full_version}" if epoch is not None else full_version
        license_ = h.string(LICENSE)
        vendor = h.string(VENDOR)
        return Package(
            type="rpm", name=name, version=shown,
            purl=purl("rpm", name, full_version, namespace=namespace, qualifiers=qualifiers),
            found_by=self.name, location=location, licenses=(license_,) if license_ else (),
            files=self._files(found, h), architecture=arch, homepage=h.string(URL),
            supplier=f"Organization: {vendor}" if vendor else "", source=h.string(SOURCERPM),
        )

    @staticmethod
    def _files(found: Found, h: Header) -> tuple[OwnedFile, ...]:
        names, dirs, indexes = h.strings(BASENAMES), h.strings(DIRNAMES), h.integers(DIRINDEXES)
        digests = h.strings(FILEDIGESTS)
        algo = DIGEST_ALGOS.get(h.integer(FILEDIGESTALGO) or 1, "")
        out: dict[str, OwnedFile] = {}
        for i, base in enumerate(names):
            if i >= len(indexes) or indexes[i] >= len(dirs):
                break
            path = dirs[indexes[i]] + base
            digest = digests[i] if i < len(digests) else ""
            if not digest and found.is_dir(path):
                continue  # directories have no digest
            out[path] = found.owned(path, ((algo, digest.lower()),) if digest and algo else ())
        return tuple(out[p] for p in sorted(out))

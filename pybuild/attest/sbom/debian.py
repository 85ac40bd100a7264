"""Debian and Ubuntu packages: the dpkg database, as Syft's dpkg cataloger reads it.

Read: /var/lib/dpkg/status (installed paragraphs only) and, for distroless images,
/var/lib/dpkg/status.d/* (one paragraph a file, no Status field). Each package's files come
from /var/lib/dpkg/info/NAME[:ARCH].list (status.d images have none), their MD5s from the
.md5sums beside it, its licences from /usr/share/doc/NAME/copyright when that file is in the
machine-readable copyright format (the `License:` short names), else from the
/usr/share/common-licenses/* files it points at.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.model import OwnedFile, Package
from pybuild.attest.sbom.scanner import DB_LIMIT, Found, person, read_whole

STATUS = "/var/lib/dpkg/status"
STATUS_D = "/var/lib/dpkg/status.d/"
INFO = "/var/lib/dpkg/info/"
DOC = "/usr/share/doc/"
_COPYRIGHT_FORMAT = "copyright-format/1.0"
_COMMON = re.compile(r"/usr/share/common-licenses/([A-Za-z0-9][A-Za-z0-9.+_-]*)")
_SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")


def paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a deb822 file; continuation lines are joined with newlines."""
    para: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if para:
                yield para
            para, key = {}, ""
            continue
        if line[0] in " \t":
            if key:
                para[key] += "\n" + line[1:]
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue  # not deb822; skip the line rather than invent a field
        key = name.strip()
        para[key] = value.strip()
    if para:
        yield para


def copyright_licenses(text: str) -> tuple[str, ...]:
    """The licences a copyright file declares (see the module doc)."""
    found: list[str] = []
    if _COPYRIGHT_FORMAT in text.split("\n", 3)[0] or _COPYRIGHT_FORMAT in text[:400]:
        for para in paragraphs(text):
            value = para.get("License", "").split("\n", 1)[0].strip()
            if value:
                # "GPL-2+ or Artistic" -> both names; SPDX's writer rebuilds the expression.
                for part in re.split(r"\s+(?:or|and|OR|AND)\s+|,\s*", value):
                    part = part.strip()
                    if part and part not in found:
                        found.append(part)
    else:
        for name in _COMMON.findall(text):
            name = name.rstrip(".")
            if name not in found:
                found.append(name)
    return tuple(found)


class DpkgScanner:
    name = "dpkg-db-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        path = entry.path
        if path == STATUS or (path.startswith(STATUS_D) and "/" not in path[len(STATUS_D):]):
            return read_whole(DB_LIMIT)
        if path.startswith(INFO) and path.endswith((".list", ".md5sums")) and (
            "/" not in path[len(INFO):]
        ):
            return read_whole(DB_LIMIT)
        if path.startswith(DOC) and path.endswith("/copyright") and path.count("/") == 5:
            return read_whole(1 << 20)
        return None

    def catalog(self, found: Found) -> Iterable[Package]:
        out: list[Package] = []
        status = found.data(STATUS)
        if status is not None:
            for para in paragraphs(status.decode("utf-8", "replace")):
                words = para.get("Status", "").split()
                if len(words) == 3 and words[2] == "installed":
                    out.append(self._package(found, para, STATUS, distroless=False))
        for path, value in found.results():
            if path.startswith(STATUS_D) and not path.endswith(".md5sums") and isinstance(
                value, bytes
            ):
                for para in paragraphs(value.decode("utf-8", "replace")):
                    if "Package" in para:
                        out.append(self._package(found, para, path, distroless=True))
        return out

    def _package(self, found: Found, para: dict[str, str], location: str, *,
                 distroless: bool) -> Package:
        name = para.get("Package", "")
        version = para.get("Version", "")
        arch = para.get("Architecture", "")
        source_name, source_version = "", ""
        m = _SOURCE.match(para.get("Source", "").strip())
        if m:
            source_name, source_version = m.group(1), m.group(2) or ""
        distro = found.distro
        namespace = distro.id if distro is not None and distro.like("debian") else "debian"
        qualifiers = {"arch": arch}
        if source_name:
            qualifiers["upstream"] = (f"{source_name}@{source_version}" if source_version
                                      else source_name)
        if distro is not None and distro.like("debian"):
            qualifiers["distro"] = distro.qualifier
        files = self._files(found, name, arch, para, location, distroless=distroless)
        copyright_text = found.data(posixpath.join(DOC, name, "copyright"))
        licenses = (copyright_licenses(copyright_text.decode("utf-8", "replace"))
                    if copyright_text is not None else ())
        return Package(
            type="deb", name=name, version=version,
            purl=purl("deb", name, version, namespace=namespace, qualifiers=qualifiers),
            found_by=self.name, location=location, licenses=licenses, files=files,
            supplier=person(para.get("Maintainer", "")), architecture=arch,
            homepage=para.get("Homepage", ""), source=source_name,
        )

    def _files(self, found: Found, name: str, arch: str, para: dict[str, str],
               location: str, *, distroless: bool) -> tuple[OwnedFile, ...]:
        def first(*paths: str) -> bytes | None:
            for p in paths:
                data = found.data(p)
                if data is not None:
                    return data
            return None

        if distroless:
            listing, sums = None, first(f"{location}.md5sums")
        else:
            stems = (f"{INFO}{name}:{arch}", f"{INFO}{name}")
            listing = first(*(f"{s}.list" for s in stems))
            sums = first(*(f"{s}.md5sums" for s in stems))
        md5: dict[str, str] = {}
        if sums is not None:
            for line in sums.decode("utf-8", "replace").splitlines():
                digest, _, rel = line.strip().partition("  ")
                if rel and len(digest) == 32:
                    md5["/" + rel.lstrip("/")] = digest.lower()
        paths: list[str] = []
        if listing is not None:
            paths = [p.strip() for p in listing.decode("utf-8", "replace").splitlines()]
        else:
            paths = sorted(md5)
        for line in para.get("Conffiles", "").splitlines():
            conf = line.strip().split()
            if conf and conf[0].startswith("/"):
                paths.append(conf[0])
                if len(conf) > 1 and len(conf[1]) == 32:
                    md5.setdefault(conf[0], conf[1].lower())
        out: dict[str, OwnedFile] = {}
        for path in paths:
            if not path.startswith("/") or path in ("/.", "/") or path in out:
                continue
            entry = found.entry(path)
            if entry is not None and entry.kind == "dir":
                continue  # directories are shared between packages, not owned
            sums_for = (("MD5", md5[path]),) if path in md5 else ()
            out[path] = found.owned(path, sums_for, entry)
        return tuple(out[p] for p in sorted(out))

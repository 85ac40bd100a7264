"""Installed Python distributions: `*.dist-info/METADATA` (+ RECORD) and `*.egg-info`.

Names are normalised as PEP 503 says (and Syft does): runs of `-_.` become `-`, lowercase.
Licences: `License-Expression` (core metadata 2.4), else `License` when it is a name rather
than the licence's text, else the `License ::` classifiers. Owned files come from RECORD
(paths relative to the directory holding the .dist-info, with their sha256) or from an
egg-info's installed-files.txt (relative to the .egg-info directory).
"""

from __future__ import annotations

import base64
import binascii
import csv
import email.parser
import email.policy
import io
import posixpath
import re
from collections.abc import Iterable

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.licenses import classifier_license
from pybuild.attest.sbom.model import OwnedFile, Package
from pybuild.attest.sbom.scanner import Found, person, read_whole

_NORMALISE = re.compile(r"[-_.]+")
_MEMBERS = ("METADATA", "RECORD")
_EGG_MEMBERS = ("PKG-INFO", "installed-files.txt")


def normalise(name: str) -> str:
    return _NORMALISE.sub("-", name).lower()


def parse_metadata(data: bytes) -> dict[str, list[str]]:
    """Core metadata headers (repeatable ones as lists); the body is ignored."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    message = parser.parse(io.BytesIO(data))
    out: dict[str, list[str]] = {}
    for key, value in message.items():
        out.setdefault(key.lower(), []).append(str(value).strip())
    return out


def _licenses(meta: dict[str, list[str]]) -> tuple[str, ...]:
    expression = meta.get("license-expression", [""])[0]
    if expression:
        return (expression,)
    text = meta.get("license", [""])[0]
    if text and "\n" not in text and len(text) < 100 and text.upper() != "UNKNOWN":
        return (text,)
    found = [c for c in (classifier_license(x) for x in meta.get("classifier", [])) if c]
    return tuple(dict.fromkeys(found))


def _record_files(found: Found, site: str, record: bytes) -> tuple[OwnedFile, ...]:
    out: dict[str, OwnedFile] = {}
    reader = csv.reader(io.StringIO(record.decode("utf-8", "replace")))
    for row in reader:
        if not row or not row[0]:
            continue
        path = posixpath.normpath(posixpath.join(site, row[0]))
        checksums: tuple[tuple[str, str], ...] = ()
        if len(row) > 1 and row[1].startswith("sha256="):
            raw = row[1][len("sha256="):]
            try:
                digest = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
            except (binascii.Error, ValueError):
                digest = ""
            if len(digest) == 64:
                checksums = (("SHA256", digest),)
        out[path] = found.owned(path, checksums)
    return tuple(out[p] for p in sorted(out))


def _lines_files(found: Found, base: str, listing: bytes) -> tuple[OwnedFile, ...]:
    out: dict[str, OwnedFile] = {}
    for line in listing.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            path = posixpath.normpath(posixpath.join(base, line))
            out[path] = found.owned(path)
    return tuple(out[p] for p in sorted(out))


class PythonScanner:
    name = "python-installed-package-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        parent, base = posixpath.split(entry.path)
        if (parent.endswith(".dist-info") and base in _MEMBERS) or (
            parent.endswith(".egg-info") and base in _EGG_MEMBERS
        ) or base.endswith(".egg-info"):
            return read_whole()
        return None

    def catalog(self, found: Found) -> Iterable[Package]:
        out: list[Package] = []
        for path, value in found.results():
            if not isinstance(value, bytes):
                continue
            parent, base = posixpath.split(path)
            if parent.endswith(".dist-info") and base == "METADATA":
                record = found.data(posixpath.join(parent, "RECORD"))
                files = (_record_files(found, posixpath.dirname(parent), record)
                         if record is not None else ())
                pkg = self._package(path, value, files)
            elif parent.endswith(".egg-info") and base == "PKG-INFO":
                listing = found.data(posixpath.join(parent, "installed-files.txt"))
                files = _lines_files(found, parent, listing) if listing is not None else ()
                pkg = self._package(path, value, files)
            elif base.endswith(".egg-info"):  # a single-file egg-info: PKG-INFO itself
                pkg = self._package(path, value, ())
            else:
                continue
            if pkg is not None:
                out.append(pkg)
        return out

    def _package(self, location: str, data: bytes,
                 files: tuple[OwnedFile, ...]) -> Package | None:
        meta = parse_metadata(data)
        name = normalise(meta.get("name", [""])[0])
        version = meta.get("version", [""])[0]
        if not name or not version:
            return None
        author = meta.get("author", [""])[0]
        email_ = meta.get("author-email", [""])[0]
        supplier = person(email_ if "<" in email_ else
                          (f"{author} <{email_}>" if author and email_ else author or email_))
        return Package(
            type="python", name=name, version=version, purl=purl("pypi", name, version),
            found_by=self.name, location=location, licenses=_licenses(meta), files=files,
            supplier=supplier, homepage=meta.get("home-page", [""])[0],
        )

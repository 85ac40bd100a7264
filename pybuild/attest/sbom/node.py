"""Installed npm packages: `node_modules/NAME/package.json`, enriched by npm's lock files.

What an image holds is what is installed, so packages come from the package.json at each
package root under node_modules (`node_modules/x`, `node_modules/@scope/x`, nested ones
too), as Syft's image scan does; a package.json without a name and version is not a
package. npm's lock files (`package-lock.json` v1-v3 and the hidden
`node_modules/.package-lock.json`) add where each installed package was resolved from and
its integrity hash; a package only a lock file names is not installed and is not listed.
yarn.lock and pnpm-lock.yaml are not read.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from collections.abc import Iterable
from typing import Any

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.model import Package
from pybuild.attest.sbom.scanner import DB_LIMIT, Found, person, read_whole

_LOCKS = ("package-lock.json", ".package-lock.json")
_ALGOS = {"sha512": "SHA512", "sha384": "SHA384", "sha256": "SHA256", "sha1": "SHA1"}


def is_package_root(path: str) -> bool:
    """True for .../node_modules/NAME/package.json and .../node_modules/@S/NAME/package.json."""
    parts = path.split("/")
    if len(parts) < 4 or parts[-1] != "package.json":
        return False
    if parts[-3] == "node_modules" and not parts[-2].startswith((".", "@")):
        return True
    return (len(parts) >= 5 and parts[-4] == "node_modules" and parts[-3].startswith("@")
            and not parts[-2].startswith("."))


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # RecursionError: a hostile file nested thousands deep
    return value if isinstance(value, dict) else None


def _license(meta: dict[str, Any]) -> tuple[str, ...]:
    value = meta.get("license")
    if isinstance(value, dict):
        value = value.get("type")
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    out: list[str] = []
    for item in meta.get("licenses") or ():
        name = item.get("type") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip():
            out.append(name.strip())
    return tuple(out)


def _author(meta: dict[str, Any]) -> str:
    value = meta.get("author")
    if isinstance(value, dict):
        name, mail = value.get("name") or "", value.get("email") or ""
        value = f"{name} <{mail}>" if mail else name
    return person(value) if isinstance(value, str) else ""


def integrity_checksums(text: str) -> tuple[tuple[str, str], ...]:
    """`sha512-BASE64 sha1-BASE64` (subresource integrity) -> ((SPDX algo, hex), ...)."""
    out: list[tuple[str, str]] = []
    for item in text.split():
        algo, _, b64 = item.partition("-")
        name = _ALGOS.get(algo)
        if name is None:
            continue
        try:
            out.append((name, base64.b64decode(b64, validate=True).hex()))
        except (binascii.Error, ValueError):
            continue
    return tuple(out)


def _lock_entries(lock_path: str, lock: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Lock entries by the absolute directory of the package they describe."""
    base = posixpath.dirname(lock_path)
    if posixpath.basename(lock_path) == ".package-lock.json":
        base = posixpath.dirname(base)  # it sits in node_modules; keys are from the project
    out: dict[str, dict[str, Any]] = {}
    packages = lock.get("packages")
    if isinstance(packages, dict):  # lockfileVersion 2 and 3
        for key, value in packages.items():
            if key and isinstance(value, dict):
                out[posixpath.normpath(posixpath.join(base, key))] = value
        return out

    def walk(deps: object, prefix: str) -> None:  # lockfileVersion 1: nested dependencies
        if not isinstance(deps, dict):
            return
        for name, value in deps.items():
            if isinstance(value, dict):
                here = posixpath.join(prefix, "node_modules", name)
                out[posixpath.normpath(here)] = value
                walk(value.get("dependencies"), here)

    walk(lock.get("dependencies"), base)
    return out


class NpmScanner:
    name = "javascript-package-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        if is_package_root(entry.path):
            return read_whole()
        if posixpath.basename(entry.path) in _LOCKS:
            return read_whole(DB_LIMIT)
        return None

    def catalog(self, found: Found) -> Iterable[Package]:
        locks: dict[str, dict[str, Any]] = {}
        manifests: list[tuple[str, bytes]] = []
        for path, value in found.results():
            if not isinstance(value, bytes):
                continue
            if is_package_root(path):
                manifests.append((path, value))
            elif posixpath.basename(path) in _LOCKS:
                lock = _json(value)
                if lock is not None:
                    for where, entry in _lock_entries(path, lock).items():
                        locks.setdefault(where, entry)  # the project lock sorts first
        out: list[Package] = []
        for path, data in manifests:
            meta = _json(data)
            if meta is None:
                found.warn(f"{path}: not valid JSON; skipped")
                continue
            name, version = meta.get("name"), meta.get("version")
            if not isinstance(name, str) or not isinstance(version, str) or not name:
                continue
            lock = locks.get(posixpath.dirname(path), {})
            resolved = lock.get("resolved") or meta.get("_resolved") or ""
            integrity = lock.get("integrity") or meta.get("_integrity") or ""
            scope, _, short = name.rpartition("/")
            homepage = meta.get("homepage")
            out.append(Package(
                type="npm", name=name, version=version,
                purl=purl("npm", short, version, namespace=scope),
                found_by=self.name, location=path, licenses=_license(meta),
                supplier=_author(meta),
                download_location=resolved if isinstance(resolved, str) else "",
                homepage=homepage if isinstance(homepage, str) else "",
                checksums=integrity_checksums(integrity) if isinstance(integrity, str) else (),
            ))
        return out

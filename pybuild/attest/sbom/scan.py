"""One scan: walk a view once, hand each scanner what it selected, collect the packages."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import BinaryIO

from pybuild.attest.sbom.alpine import ApkScanner
from pybuild.attest.sbom.debian import DpkgScanner
from pybuild.attest.sbom.fsview import FileEntry, FileView, Tree, Wanted
from pybuild.attest.sbom.golang import GoBinaryScanner
from pybuild.attest.sbom.java import JavaArchiveScanner
from pybuild.attest.sbom.model import Distro, Inventory, Package
from pybuild.attest.sbom.node import NpmScanner
from pybuild.attest.sbom.python import PythonScanner
from pybuild.attest.sbom.rpm import RpmScanner
from pybuild.attest.sbom.scanner import Found, Scanner, read_whole

OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
_DISTRO = "os-release"


def default_scanners() -> tuple[Scanner, ...]:
    return (DpkgScanner(), ApkScanner(), RpmScanner(), PythonScanner(), NpmScanner(),
            GoBinaryScanner(), JavaArchiveScanner())


def parse_os_release(data: bytes) -> Distro | None:
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        fields[key] = parts[0] if parts else ""
    if not fields.get("ID"):
        return None
    return Distro(id=fields["ID"].lower(), version_id=fields.get("VERSION_ID", ""),
                  version_codename=fields.get("VERSION_CODENAME", ""),
                  pretty_name=fields.get("PRETTY_NAME", ""),
                  id_like=tuple(fields.get("ID_LIKE", "").lower().split()))


class _Selector:
    """Asks every scanner about every entry; files two scanners want are read for each."""

    def __init__(self, scanners: Sequence[Scanner]) -> None:
        self.scanners = scanners

    def __call__(self, entry: FileEntry) -> Wanted | None:
        wanted: list[tuple[str, Wanted]] = []
        if entry.path in OS_RELEASE:
            wanted.append((_DISTRO, read_whole(1 << 20)))
        for scanner in self.scanners:
            w = scanner.select(entry)
            if w is not None:
                wanted.append((scanner.name, w))
        if not wanted:
            return None
        if len(wanted) == 1:
            name, only = wanted[0]
            return Wanted(analyze=lambda f: {name: only.analyze(f)}, magic=only.magic,
                          limit=only.limit)

        def analyze(f: BinaryIO) -> dict[str, object]:
            out: dict[str, object] = {}
            for name, w in wanted:
                f.seek(0)
                if w.magic and f.read(len(w.magic)) != w.magic:
                    continue
                f.seek(0)
                out[name] = w.analyze(f)
            return out

        return Wanted(analyze=analyze, limit=max(w.limit for _, w in wanted))


def scan(view: FileView, *, scanners: Sequence[Scanner] | None = None) -> Inventory:
    """The packages installed in `view`'s filesystem, sorted, duplicates merged."""
    chosen = tuple(scanners) if scanners is not None else default_scanners()
    tree = Tree.collect(view, _Selector(chosen))
    distro: Distro | None = None
    for path in OS_RELEASE:
        per = tree.result(path)
        data = per.get(_DISTRO) if isinstance(per, dict) else None
        if isinstance(data, bytes):
            distro = parse_os_release(data)
            if distro is not None:
                break
    packages: dict[tuple[str, str, str, str, str], Package] = {}
    warnings: list[str] = []
    for scanner in chosen:
        found = Found(scanner=scanner.name, tree=tree, distro=distro)
        for pkg in scanner.catalog(found):
            packages.setdefault(pkg.sort_key, pkg)
        warnings.extend(found.warnings)
    ordered = tuple(packages[k] for k in sorted(packages))
    return Inventory(packages=ordered, distro=distro, warnings=tuple(warnings))

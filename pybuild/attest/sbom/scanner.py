"""The protocol every package scanner implements, and what a scan hands it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from pybuild.attest.sbom.fsview import FileEntry, Tree, Wanted
from pybuild.attest.sbom.model import Distro, OwnedFile, Package

DB_LIMIT = 512 << 20  # a package database bigger than this is not read
MANIFEST_LIMIT = 16 << 20  # nor a package manifest (METADATA, package.json) bigger than this


def person(text: str) -> str:
    """An SPDX supplier for "Name <email>": "Person: Name (email)"."""
    name, _, rest = text.partition("<")
    email = rest.split(">", 1)[0].strip()
    name = name.strip()
    if not name:
        return ""
    return f"Person: {name} ({email})" if email else f"Person: {name}"


def read_all(f: BinaryIO) -> bytes:
    return f.read()


def read_whole(limit: int = MANIFEST_LIMIT) -> Wanted:
    return Wanted(analyze=read_all, limit=limit)


@dataclass(slots=True)
class Found:
    """What one scanner sees after the walk: its analysed files, the tree, the distro."""

    scanner: str
    tree: Tree
    distro: Distro | None
    warnings: list[str] = field(default_factory=list)

    def results(self) -> Iterator[tuple[str, object]]:
        """(path, analysis) of every file this scanner selected, in path order."""
        for path in sorted(self.tree.results):
            per = self.tree.results[path]
            if isinstance(per, dict) and self.scanner in per:
                yield path, per[self.scanner]

    def result(self, path: str) -> object:
        """This scanner's analysis of `path` (symlinks followed), or None."""
        per = self.tree.result(path)
        return per.get(self.scanner) if isinstance(per, dict) else None

    def data(self, path: str) -> bytes | None:
        value = self.result(path)
        return value if isinstance(value, bytes) else None

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def entry(self, path: str) -> FileEntry | None:
        """The entry `path` names (symlinks followed), if it exists."""
        real = self.tree.resolve(path)
        return self.tree.entries.get(real) if real is not None else None

    def owned(self, path: str, checksums: tuple[tuple[str, str], ...] = (),
              entry: FileEntry | None = None) -> OwnedFile:
        """An owned file, with the layer it comes from when the view knows it."""
        if entry is None:
            entry = self.entry(path)
        return OwnedFile(path=path, checksums=checksums,
                         layer=entry.layer if entry is not None else "")

    def is_dir(self, path: str) -> bool:
        entry = self.entry(path)
        return entry is not None and entry.kind == "dir"


class Scanner(Protocol):
    """Finds one ecosystem's packages: selects files during the walk, then catalogs them.

    Scanners select disjoint files in practice; when two select the same one, each gets
    its own analysis (the file is read once per scanner).
    """

    name: str

    def select(self, entry: FileEntry) -> Wanted | None: ...

    def catalog(self, found: Found) -> Iterable[Package]: ...


Analyze = Callable[[BinaryIO], object]

"""Filesystem views a scan reads: an unpacked root directory, or an image's layer tars.

A view walks the *final* filesystem once. For each entry it asks the scan's selector
whether the scanners want the content; when they do, the selector's `Wanted.analyze` gets
a seekable binary file of it (the file itself for a directory; the bytes, collected while
the tar streams past, for layers) and what it returns is kept beside the entry. Nothing
else is read: a scan costs one pass of stat (or tar headers) plus the files it asked for.

The layer view never unpacks to disk. It streams the layers in order, applies whiteouts
(`.wh.NAME`, `.wh..wh..opq`) and overwrites as an OCI applier does, and analyses wanted
files as they pass; a file a later layer replaces was analysed for nothing, which is cheaper
than a second pass over every layer. Paths are normalised lexically and clamped at the root,
so a hostile tar name (`../../etc/passwd`) names a path inside the image, never outside.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from pybuild.digest import Digest
from pybuild.errors import IntegrityError, UserError
from pybuild.layers import tarformat as tf
from pybuild.layers.decompress import decompressed
from pybuild.layers.errors import LayerError
from pybuild.layers.tarreader import TarEntry, TarReader

Kind = Literal["file", "dir", "symlink", "other"]
DEFAULT_LIMIT = 256 << 20  # a wanted file bigger than this is not analysed
_MAX_HOPS = 40  # symlinks followed in one lookup, as Linux's MAXSYMLINKS
MAX_DEPTH = 256  # directory levels a DirectoryView descends (and so holds open)


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # absolute and normalised: "/usr/bin/env"
    kind: Kind
    mode: int  # permission bits
    size: int
    link: str = ""  # a symlink's target, as stored
    layer: str = ""  # the digest of the layer blob the entry comes from (layer views)

    @property
    def executable(self) -> bool:
        return self.kind == "file" and bool(self.mode & 0o111)


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """What a scanner wants of an entry's content: `analyze` it if it starts with `magic`."""

    analyze: Callable[[BinaryIO], object]
    magic: bytes = b""
    limit: int = DEFAULT_LIMIT


Selector = Callable[[FileEntry], Wanted | None]


class FileView(Protocol):
    """A filesystem to scan; `walk` yields each final entry with its analysis (or None)."""

    name: str  # what the view shows (a directory path, an image digest)

    def walk(self, select: Selector) -> Iterator[tuple[FileEntry, object]]: ...


def normalise(name: str) -> str:
    """An absolute, lexically clean path; `..` never climbs above the root."""
    return posixpath.normpath("/" + name.lstrip("/")) if name.strip("/.") else "/"


# -- a directory --------------------------------------------------------------------------


def _kind(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class DirectoryView:
    """An unpacked root filesystem. Never follows symlinks: every open is relative to an
    open directory and refuses a symlink, so a link to /etc/shadow is an entry, not a read
    of the host's file."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.name = str(self.root)

    def walk(self, select: Selector) -> Iterator[tuple[FileEntry, object]]:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UserError(f"cannot scan {self.root}: {exc.strerror}") from None
        # A stack of open directories (iterative: a hostile tree may be thousands deep;
        # bounded: below MAX_DEPTH nothing is read, which no real package database is).
        stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = [(fd, "/", self._list(fd))]
        try:
            while stack:
                dir_fd, path, names = stack[-1]
                de = next(names, None)
                if de is None:
                    os.close(dir_fd)
                    stack.pop()
                    continue
                found = self._entry(dir_fd, path, de, select)
                if found is None:
                    continue
                yield found
                entry = found[0]
                if entry.kind == "dir" and len(stack) < MAX_DEPTH:
                    try:
                        sub = os.open(de.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                      dir_fd=dir_fd)
                    except OSError:
                        continue
                    stack.append((sub, entry.path, self._list(sub)))
        finally:
            for dir_fd, _, _ in stack:
                os.close(dir_fd)

    @staticmethod
    def _list(fd: int) -> Iterator[os.DirEntry[str]]:
        with os.scandir(fd) as it:
            names = sorted(it, key=lambda e: e.name)
        return iter(names)

    def _entry(self, fd: int, path: str, de: os.DirEntry[str], select: Selector
               ) -> tuple[FileEntry, object] | None:
        try:
            st = de.stat(follow_symlinks=False)
        except OSError:
            return None  # vanished while we walked
        kind = _kind(st.st_mode)
        link = ""
        if kind == "symlink":
            try:
                link = os.readlink(de.name, dir_fd=fd)
            except OSError:
                link = ""
        entry = FileEntry(path=posixpath.join(path, de.name), kind=kind,
                          mode=stat.S_IMODE(st.st_mode),
                          size=st.st_size if kind == "file" else 0, link=link)
        wanted = select(entry)
        result: object = None
        if wanted is not None and kind == "file" and entry.size <= wanted.limit:
            result = self._analyze(fd, de.name, wanted)
        return entry, result

    @staticmethod
    def _analyze(fd: int, name: str, wanted: Wanted) -> object:
        try:
            file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError:
            return None
        with os.fdopen(file_fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None  # swapped for a FIFO or device under us
            if wanted.magic:
                if f.read(len(wanted.magic)) != wanted.magic:
                    return None
                f.seek(0)
            return wanted.analyze(f)


# -- a stack of layer tars --------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Hashes a compressed layer blob as it is read, so its digest is checked at the end."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._src.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.size += n
        return n


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """One layer blob: how to open it (compressed or not), and its digest if known."""

    open: Callable[[], BinaryIO]
    digest: str = ""  # checked against the bytes read when set
    name: str = ""  # for messages


@dataclass(slots=True)
class _Node:
    entry: FileEntry
    result: object
    layer: int
    children: set[str] = field(default_factory=set)


class LayerStackView:
    """An image's filesystem as its layer tars describe it, read in order."""

    def __init__(self, layers: Sequence[Layer], *, name: str = "image") -> None:
        self.layers = tuple(layers)
        self.name = name

    def walk(self, select: Selector) -> Iterator[tuple[FileEntry, object]]:
        nodes: dict[str, _Node] = {"/": _Node(FileEntry(path="/", kind="dir", mode=0o755,
                                                        size=0), None, -1)}
        for index, layer in enumerate(self.layers):
            self._apply(index, layer, nodes, select)
        for path in sorted(nodes):
            if path != "/":
                node = nodes[path]
                yield node.entry, node.result

    def _apply(self, index: int, layer: Layer, nodes: dict[str, _Node],
               select: Selector) -> None:
        what = layer.name or layer.digest or f"layer {index}"
        with layer.open() as raw:
            hashing = _HashingReader(raw)
            try:
                reader = TarReader(decompressed(io.BufferedReader(hashing, 1 << 20)))
                for e in reader:
                    self._entry(index, layer, e, reader, nodes, select)
                reader.drain()
            except LayerError as exc:
                raise UserError(f"{what}: {exc}", code="bad-layer") from None
            while hashing.read(1 << 20):
                pass  # hash what follows the tar's end, too
        if layer.digest:
            actual = Digest.from_hex(hashing.sha.hexdigest())
            if actual != layer.digest:
                raise IntegrityError(
                    f"{what}: digest mismatch (content hashes to {actual})")

    def _entry(self, index: int, layer: Layer, e: TarEntry, reader: TarReader,
               nodes: dict[str, _Node], select: Selector) -> None:
        path = normalise(e.name.decode("utf-8", "surrogateescape"))
        if path == "/":
            return
        parent, base = posixpath.split(path)
        if base == tf.WHITEOUT_OPAQUE:
            self._opaque(parent, index, nodes)
            return
        if base.startswith(tf.WHITEOUT_PREFIX):
            self._remove(posixpath.join(parent, base[len(tf.WHITEOUT_PREFIX):]), nodes)
            return
        link = ""
        result: object = None
        size = e.size
        match e.type:
            case tf.REG:
                kind: Kind = "file"
            case tf.DIR:
                kind = "dir"
            case tf.SYMLINK:
                kind = "symlink"
                link = e.linkname.decode("utf-8", "surrogateescape")
            case tf.LINK:
                kind = "file"
                target = nodes.get(normalise(e.linkname.decode("utf-8", "surrogateescape")))
                if target is None or target.entry.kind != "file":
                    return  # a hard link to nothing: appliers refuse it; we skip it
                size = target.entry.size
                result = target.result
            case _:
                kind = "other"
        if kind != "file":
            size = 0
        entry = FileEntry(path=path, kind=kind, mode=e.mode, size=size, link=link,
                          layer=layer.digest)
        if e.type == tf.REG:
            wanted = select(entry)
            if wanted is not None and entry.size <= wanted.limit:
                result = self._analyze(reader, wanted)
        old = nodes.get(path)
        if old is not None and (old.entry.kind != "dir" or kind != "dir"):
            self._remove(path, nodes)
            old = None
        self._ensure_parents(parent, index, nodes)
        if old is not None:  # a directory's metadata changes; its children stay
            old.entry, old.layer = entry, index
        else:
            nodes[path] = _Node(entry, result, index)
            nodes[parent].children.add(path)

    @staticmethod
    def _analyze(reader: TarReader, wanted: Wanted) -> object:
        head = bytearray()
        data = bytearray()
        ok = True

        def take(chunk: memoryview) -> None:
            nonlocal ok
            if not ok:
                return
            if len(head) < len(wanted.magic):
                head.extend(chunk[: len(wanted.magic) - len(head)])
                if not wanted.magic.startswith(bytes(head)):
                    ok = False
                    return
            data.extend(chunk)

        reader.copy_data(take)
        if not ok or len(head) < len(wanted.magic):
            return None
        return wanted.analyze(io.BytesIO(bytes(data)))

    @staticmethod
    def _ensure_parents(parent: str, index: int, nodes: dict[str, _Node]) -> None:
        missing: list[str] = []
        while parent not in nodes:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        node = nodes[parent]
        if node.entry.kind != "dir":
            # A path under a non-directory: an applier replaces it with a directory.
            LayerStackView._remove(parent, nodes)
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for path in reversed(missing):
            nodes[path] = _Node(FileEntry(path=path, kind="dir", mode=0o755, size=0), None,
                                index)
            nodes[posixpath.dirname(path)].children.add(path)

    @staticmethod
    def _remove(path: str, nodes: dict[str, _Node]) -> None:
        node = nodes.pop(path, None)
        if node is None:
            return
        parent = nodes.get(posixpath.dirname(path))
        if parent is not None:
            parent.children.discard(path)
        stack = list(node.children)
        while stack:
            child = nodes.pop(stack.pop(), None)
            if child is not None:
                stack.extend(child.children)

    @staticmethod
    def _opaque(directory: str, index: int, nodes: dict[str, _Node]) -> None:
        node = nodes.get(directory)
        if node is None:
            return
        for child in [c for c in node.children if nodes[c].layer < index]:
            LayerStackView._remove(child, nodes)


# -- the final tree, for lookups -----------------------------------------------------------


class Tree:
    """The walked filesystem: entries and analyses by path, with symlink resolution."""

    def __init__(self) -> None:
        self.entries: dict[str, FileEntry] = {}
        self.results: dict[str, object] = {}
        self._memo: dict[str, str | None] = {}  # resolve's answers (the tree is final)

    @classmethod
    def collect(cls, view: FileView, select: Selector) -> Tree:
        tree = cls()
        for entry, result in view.walk(select):
            tree.entries[entry.path] = entry
            if result is not None:
                tree.results[entry.path] = result
        return tree

    def resolve(self, path: str) -> str | None:
        """The path `path` names once every symlink in it is followed (inside the root)."""
        return self._resolve(normalise(path), 0)

    def _resolve(self, path: str, hops: int) -> str | None:
        # Iterative over the components (hostile images have very deep paths); recursive
        # only per symlink followed, so at most _MAX_HOPS deep. Prefixes are memoised.
        memo = self._memo if hops == 0 else None
        if memo is not None and path in memo:
            return memo[path]
        real: str | None = "/"
        lexical = ""
        for name in (n for n in path.split("/") if n):
            lexical += "/" + name
            if memo is not None and lexical in memo:
                real = memo[lexical]
            elif real is not None:
                candidate = (real if real != "/" else "") + "/" + name
                entry = self.entries.get(candidate)
                if entry is None:
                    real = None
                elif entry.kind == "symlink":
                    base = "/" if entry.link.startswith("/") else real
                    real = (self._resolve(normalise(posixpath.join(base, entry.link)), hops + 1)
                            if hops < _MAX_HOPS else None)
                else:
                    real = candidate
                if memo is not None:
                    memo[lexical] = real
            if real is None:
                break
        if memo is not None:
            memo[path] = real
        return real

    def result(self, path: str) -> object:
        """The analysis of the file `path` names (symlinks followed), or None."""
        real = self.resolve(path)
        return None if real is None else self.results.get(real)

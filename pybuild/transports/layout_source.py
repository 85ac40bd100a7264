"""Reading files out of an image directory or archive, and importing its blobs verified.

A source is a directory or a tar archive seen as a tree of regular files. Nothing from
it is trusted: each file must be a regular file (in a directory, symlinks are refused;
in an archive, links are followed only inside the archive), small files (manifests,
indexes, configs) are read with a bound, and every blob is checked against its
descriptor, digest and size, while it streams into the store, before it is published.
Children are published before their parents, so the store never holds a manifest whose
blobs are missing.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader, check_bytes
from pybuild.content.walk import children, is_tree
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index
from pybuild.transports.archive import blob_path
from pybuild.transports.layout_index import INDEX_FILE, OCI_LAYOUT_FILE

# Manifests, indexes and configs are read whole; anything bigger is not one (containerd
# caps manifests at 4 MiB too).
MAX_JSON = 8 << 20
_CHUNK = 1 << 20
_MAX_LINKS = 40


class Source(Protocol):
    where: str

    def has(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...

    def close(self) -> None: ...


class DirSource:
    def __init__(self, root: Path, *, kind: str = "OCI layout") -> None:
        self.root = root
        self.where = f"{kind} {root}"

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.lstat(self.root / name)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def has(self, name: str) -> bool:
        return self._lstat(name) is not None

    def open(self, name: str) -> BinaryIO:
        st = self._lstat(name)
        if st is None:
            raise NotFoundError(f"{self.where} has no {name}")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{self.where}: {name} is not a regular file")
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise UserError(f"{self.where}: cannot read {name}: {exc.strerror}") from None
        return os.fdopen(fd, "rb")

    def close(self) -> None:
        pass


def _member_name(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class TarSource:
    def __init__(self, path: Path, *, kind: str = "OCI archive") -> None:
        self.where = f"{kind} {path}"
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        except tarfile.TarError as exc:
            raise UserError(f"{path} is not a tar archive ({exc})") from None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        # One pass over the headers; later names win, as on extraction.
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for info in self._tar.getmembers():
                self._members[_member_name(info.name)] = info
        except tarfile.TarError as exc:
            self._tar.close()
            raise UserError(f"{self.where}: damaged archive ({exc})") from None

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        """The member `name` names, symlinks followed inside the archive only (moby's
        `docker save` links repeated layers to the first copy)."""
        info = self._members.get(name)
        hops = 0
        while info is not None and info.issym():
            hops += 1
            target = info.linkname
            if hops > _MAX_LINKS or target.startswith("/"):
                raise UserError(f"{self.where}: {name} is a link that leaves the archive")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(_member_name(
                info.name)), target))
            if joined.startswith("../") or joined == "..":
                raise UserError(f"{self.where}: {name} is a link that leaves the archive")
            info = self._members.get(joined)
        return info

    def has(self, name: str) -> bool:
        return self._resolve(name) is not None

    def open(self, name: str) -> BinaryIO:
        info = self._resolve(name)
        if info is None:
            raise NotFoundError(f"{self.where} has no {name}")
        if not (info.isreg() or info.islnk()):
            raise UserError(f"{self.where}: {name} is not a regular file")
        try:
            f = self._tar.extractfile(info)
        except (tarfile.TarError, KeyError) as exc:
            raise UserError(f"{self.where}: cannot read {name} ({exc})") from None
        if f is None:
            raise UserError(f"{self.where}: {name} is not a regular file")
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()


def open_source(path: Path) -> Source:
    """The OCI layout directory or archive at `path`; NotFoundError if there is nothing."""
    if path.is_dir():
        return DirSource(path)
    if path.exists():
        return TarSource(path)
    raise NotFoundError(f"{path} does not exist")


def read_small(source: Source, name: str, limit: int = MAX_JSON) -> bytes:
    with source.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{source.where}: {name} is larger than {limit} bytes")
    return data


def read_json(source: Source, name: str, limit: int = MAX_JSON) -> object:
    try:
        return json.loads(read_small(source, name, limit))
    except ValueError as exc:
        raise UserError(f"{source.where}: {name} is not JSON ({exc})") from None


def is_layout(source: Source) -> bool:
    return source.has(OCI_LAYOUT_FILE)


def read_index(source: Source) -> Index:
    """index.json of a layout whose `oci-layout` file is checked."""
    try:
        layout = read_json(source, OCI_LAYOUT_FILE, 1 << 16)
    except NotFoundError:
        raise UserError(f"{source.where} is not an OCI image layout (no oci-layout file)",
                        hint="pybuild reads OCI layouts and archives, and docker archives "
                             "(`docker save`, `podman save`)") from None
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise UserError(f"{source.where}: oci-layout has no imageLayoutVersion")
    return Index.parse(read_small(source, INDEX_FILE), where=f"{source.where} index.json")


def read_blob(source: Source, desc: Descriptor) -> bytes:
    """A small blob (a manifest, a config), verified."""
    try:
        data = read_small(source, blob_path(desc.digest))
    except NotFoundError:
        raise NotFoundError(f"{source.where} lacks blob {desc.digest}") from None
    check_bytes(data, desc.digest, desc.size, where=source.where)
    return data


def import_blob(source: Source, store: ContentStore, desc: Descriptor, *,
                name: str | None = None, parent: str = "index.json") -> None:
    """Stream one blob (at `name`, by default its layout path) into the store, verified;
    nothing happens if the store has it (with the right size)."""
    if store.has(desc.digest):
        if store.size(desc.digest) != desc.size:
            raise IntegrityError(
                f"blob {desc.digest}: the content store has {store.size(desc.digest)} bytes, "
                f"the descriptor in {source.where} says {desc.size}")
        return
    try:
        f = source.open(name or blob_path(desc.digest))
    except NotFoundError:
        if mt.is_foreign(desc.media_type, desc.urls):
            return
        raise NotFoundError(
            f"{source.where} lacks blob {desc.digest} (referenced by {parent})") from None
    with f, store.writer() as w:
        reader = VerifyingReader(f, desc.digest, desc.size, where=source.where)
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := reader.readinto(buf):
            w.write(view[:n])
        reader.finish()
        w.commit(desc.digest, desc.size)


def import_image(source: Source, store: ContentStore, desc: Descriptor) -> None:
    """Import `desc` and everything below it, children before parents (an explicit
    stack: a hostile layout's deep chain of indexes cannot exhaust recursion)."""
    done: set[Digest] = set()
    stack: list[tuple[Descriptor, str, bytes | None]] = [(desc, "index.json", None)]
    while stack:
        item, parent, data = stack.pop()
        if data is not None:  # its children are in: publish it
            store.write(data, expected=item.digest)
            continue
        if item.digest in done:
            continue
        done.add(item.digest)
        if not is_tree(item):
            import_blob(source, store, item, parent=parent)
            continue
        try:
            data = read_blob(source, item)
        except NotFoundError:
            raise NotFoundError(
                f"{source.where} lacks blob {item.digest} (referenced by {parent})") from None
        stack.append((item, parent, data))
        kind = "index" if mt.is_index(item.media_type) else "manifest"
        stack.extend((c, f"{kind} {item.digest}", None) for c in reversed(children(item, data)))

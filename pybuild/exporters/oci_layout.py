"""OCI image layouts (image-spec image-layout.md): write one from the store, import one into it.

A layout is `oci-layout`, `index.json` and `blobs/<alg>/<hex>`, either as a directory or as a
tar archive of the same tree. Writing streams every blob (never whole layers in memory) and
re-hashes it on the way out, so a corrupt store blob is an error, not a corrupt export. The
tar form is byte-stable: sorted entries, mtime 0, owner 0:0, fixed modes (containerd's
archive exporter uses the same modes). Reading checks every blob it imports against its
descriptor's digest and size before the blob is published in the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader, blob_too_big, check_blob
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.layers.hashsink import FileHashWriter, plain_file_fd
from pybuild.oci import mediatypes as mt
from pybuild.oci.canonical import canonical_json
from pybuild.oci.descriptor import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    Descriptor,
    Index,
    Manifest,
)
from pybuild.oci.reference import Reference

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20
# Manifests and indexes are read whole to walk them; anything bigger is not a manifest
# (containerd caps manifests at 4 MiB too).
_MAX_JSON = 8 << 20
# Fixed archive metadata. containerd's exporter writes these modes with a zero mtime.
ARCHIVE_MTIME = 0
_MODE_BLOB = 0o444
_MODE_DIR = 0o755
_MODE_INDEX = 0o644

Dest = str | os.PathLike[str] | BinaryIO


# -- walking an image ----------------------------------------------------------------


def _is_index(desc: Descriptor) -> bool:
    return desc.media_type in mt.INDEX_TYPES


def _is_manifest(desc: Descriptor) -> bool:
    return desc.media_type in mt.MANIFEST_TYPES


def _children(desc: Descriptor, data: bytes) -> list[Descriptor]:
    if _is_index(desc):
        return list(Index.parse(data, where=f"index {desc.digest}").manifests)
    if _is_manifest(desc):
        m = Manifest.parse(data, where=f"manifest {desc.digest}")
        return [m.config, *m.layers]
    return []


def _is_foreign(desc: Descriptor) -> bool:
    """A non-distributable layer: stays at its URLs, may be absent from a layout or store."""
    return bool(desc.urls) or desc.media_type == mt.DOCKER_FOREIGN_LAYER_GZIP


def image_blobs(store: ContentStore, descriptor: Descriptor) -> list[Descriptor]:
    """Every blob of an image (children before parents, each digest once).

    Strict, unlike `walk.reachable`: a missing child is an error, because an export or a
    push with a hole in it is a broken image.
    """
    out: list[Descriptor] = []
    seen: set[Digest] = set()

    def visit(desc: Descriptor, parent: str) -> None:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        if not store.has(desc.digest):
            if _is_foreign(desc):
                return
            raise NotFoundError(
                f"blob {desc.digest} ({desc.media_type}, referenced by {parent}) is not in "
                "the content store"
            )
        if _is_index(desc) or _is_manifest(desc):
            data = store.read(desc.digest, what="manifest")
            _check_bytes(data, desc, where="content store")
            for child in _children(desc, data):
                visit(child, f"{desc.media_type.rsplit('.', 1)[-1]} {desc.digest}")
        out.append(desc)

    visit(descriptor, "the exported image")
    return out


def _check_bytes(data: bytes, desc: Descriptor, *, where: str) -> None:
    check_blob(desc, len(data), Digest.from_bytes(data), where=where)


def copy_blob_verified(store: ContentStore, desc: Descriptor, dst: IO[bytes]) -> None:
    """Stream a store blob into `dst`, raising IntegrityError if it is not what `desc` says.

    Into a regular file open for reading and writing (an archive or layout file being
    written), the blob is copied in-kernel and hashed back *from `dst`* on a worker thread
    (FileHashWriter): the check covers the bytes as written, and the blob never passes
    through Python. Elsewhere (a pipe, stdout) it is streamed and hashed on the way.
    """
    fd = plain_file_fd(dst)
    if fd is not None:
        _copy_blob_to_file(store, desc, dst, fd)
        return
    with store.open(desc.digest) as f:
        reader = VerifyingReader(f, desc, "content store")
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := reader.readinto(buf):
            dst.write(view[:n])
        reader.finish()


def _copy_blob_to_file(store: ContentStore, desc: Descriptor, dst: IO[bytes], fd: int) -> None:
    where = "content store"
    with store.open(desc.digest) as f:
        size = os.fstat(f.fileno()).st_size
        if size > desc.size:
            raise blob_too_big(desc, where)
        dst.flush()
        writer = FileHashWriter(fd)
        try:
            copied = writer.copy_fd(f.fileno(), desc.size)
            digest_hex, _ = writer.close()
        except BaseException:
            writer.abort()
            raise
    dst.seek(os.lseek(fd, 0, os.SEEK_CUR))  # past the blob, written through the descriptor
    check_blob(desc, copied, Digest.from_hex(digest_hex), where=where)


# -- names --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayoutName:
    """The two annotations that name an image in an index.json."""

    ref_name: str  # org.opencontainers.image.ref.name, e.g. "latest"
    image_name: str | None  # io.containerd.image.name, e.g. "docker.io/library/app:1"


def layout_name(ref: str) -> LayoutName:
    """How `ref_name=` is read.

    A full image reference (it has a ":", "/" or "@": `app:1`, `ghcr.io/o/app`) names the
    image the way BuildKit's oci exporter does: `ref.name` is its tag and
    `io.containerd.image.name` the normalised name. A bare word (`latest`, `amd64`) is the
    `ref.name` itself, as in skopeo's `oci:DIR:latest`.
    """
    if not ref or ref != ref.strip():
        raise UserError(f"invalid OCI layout reference {ref!r}", code="bad-reference")
    if any(c in ref for c in ":/@"):
        parsed = Reference.parse(ref)
        return LayoutName(ref_name=parsed.tag or str(parsed.digest), image_name=str(parsed))
    return LayoutName(ref_name=ref, image_name=None)


def named_descriptor(descriptor: Descriptor, name: LayoutName | None) -> Descriptor:
    if name is None:
        return descriptor
    extra = {ANNOTATION_REF_NAME: name.ref_name}
    if name.image_name is not None:
        extra[ANNOTATION_IMAGE_NAME] = name.image_name
    return descriptor.with_annotations(**extra)


def _unnamed(descriptor: Descriptor) -> Descriptor:
    kept = tuple(
        (k, v)
        for k, v in descriptor.annotations
        if k not in (ANNOTATION_REF_NAME, ANNOTATION_IMAGE_NAME)
    )
    return dataclasses.replace(descriptor, annotations=kept)


def layout_file_bytes() -> bytes:
    return canonical_json({"imageLayoutVersion": LAYOUT_VERSION})


def index_bytes(manifests: list[Descriptor]) -> bytes:
    return Index(media_type=mt.OCI_INDEX, manifests=tuple(manifests)).encode()


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


# -- a deterministic archive --------------------------------------------------------------


class ArchiveWriter:
    """A tar stream with fixed metadata, written in the order entries are added.

    Headers come from `TarInfo.tobuf` (PAX format; these short ASCII names never need an
    extended header), data is streamed straight to `out`: no seeks, so stdout and pipes
    work. The archive ends with the two zero blocks and no record padding, as Go's
    archive/tar writes it. Callers add entries sorted by name.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._closed = False

    def _header(self, name: str, mode: int, size: int = 0, *, is_dir: bool = False) -> None:
        if self._closed:
            raise ValueError("archive is closed")
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.size = size
        info.mtime = ARCHIVE_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        self._out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._out.write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_dir(self, name: str) -> None:
        self._header(name.rstrip("/") + "/", _MODE_DIR, is_dir=True)

    def add_bytes(self, name: str, data: bytes, *, mode: int = _MODE_INDEX) -> None:
        self._header(name, mode, len(data))
        self._out.write(data)
        self._pad(len(data))

    def add_blob(self, store: ContentStore, desc: Descriptor) -> None:
        # Checked before the header goes out, so a short blob cannot tear the archive.
        size = store.size(desc.digest)
        if size != desc.size:
            raise IntegrityError(
                f"blob {desc.digest} in the content store: size mismatch (descriptor says "
                f"{desc.size} bytes, blob has {size})"
            )
        self._header(blob_path(desc.digest), _MODE_BLOB, desc.size)
        copy_blob_verified(store, desc, self._out)
        self._pad(desc.size)

    def add_blobs(self, store: ContentStore, blobs: list[Descriptor]) -> None:
        """The `blobs/` tree: its directories, then every blob sorted by path."""
        by_path = {blob_path(d.digest): d for d in blobs if store.has(d.digest)}
        algorithms = sorted({d.digest.algorithm for d in by_path.values()})
        self.add_dir("blobs")
        for alg in algorithms:
            self.add_dir(f"blobs/{alg}")
        for path in sorted(by_path):
            self.add_blob(store, by_path[path])

    def close(self) -> None:
        """Write the end-of-archive blocks. Does not close `out`."""
        if not self._closed:
            self._out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
            self._closed = True


@contextlib.contextmanager
def open_archive_dest(dest: Dest) -> Iterator[IO[bytes]]:
    """A file to write an archive to: a temp file renamed over `dest` on success only."""
    if not isinstance(dest, str | os.PathLike):
        yield dest
        dest.flush()
        return
    path = Path(dest)
    if path.is_dir():
        raise UserError(f"{path} is a directory; expected a path for the archive file")
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- writing --------------------------------------------------------------------------------


def write_oci_layout(
    store: ContentStore,
    descriptor: Descriptor,
    dest: Dest,
    *,
    tar: bool,
    ref_name: str | None,
) -> Descriptor:
    """Write the image `descriptor` (a manifest or an index, with all children) as a layout.

    `tar=True`: `dest` is the archive path (written atomically) or a binary stream (stdout).
    `tar=False`: `dest` is a directory; an existing layout there is added to (an entry with
    the same ref name is replaced), anything else non-empty is refused. Returns the
    descriptor as recorded in index.json. See `layout_name` for how `ref_name` is read.
    """
    name = layout_name(ref_name) if ref_name is not None else None
    entry = named_descriptor(descriptor, name)
    blobs = image_blobs(store, descriptor)
    if tar:
        with open_archive_dest(dest) as out:
            archive = ArchiveWriter(out)
            archive.add_blobs(store, blobs)
            archive.add_bytes(INDEX_FILE, index_bytes([entry]))
            archive.add_bytes(OCI_LAYOUT_FILE, layout_file_bytes(), mode=_MODE_BLOB)
            archive.close()
        return entry
    if not isinstance(dest, str | os.PathLike):
        raise UserError("an OCI layout directory needs a path, not a stream (use tar=true)")
    _write_layout_dir(store, blobs, entry, Path(dest))
    return entry


def _existing_index(root: Path) -> list[Descriptor] | None:
    """The manifests of a layout already at `root`; None if `root` is empty or missing."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise UserError(f"{root} exists and is not a directory")
    if not (root / OCI_LAYOUT_FILE).exists():
        if any(root.iterdir()):
            raise UserError(
                f"{root} is not empty and not an OCI layout; refusing to write into it",
                hint="choose an empty or new directory",
            )
        return None
    index_path = root / INDEX_FILE
    if not index_path.exists():
        return []
    return list(Index.parse(index_path.read_bytes(), where=str(index_path)).manifests)


def _write_layout_dir(
    store: ContentStore, blobs: list[Descriptor], entry: Descriptor, root: Path
) -> None:
    existing = _existing_index(root)
    root.mkdir(parents=True, exist_ok=True)
    for desc in blobs:
        if not store.has(desc.digest):
            continue  # a foreign layer
        target = root / blob_path(desc.digest)
        if target.exists():
            try:
                with open(target, "rb") as f:
                    VerifyingReader(f, desc, f"layout {root}").drain()
                continue
            except IntegrityError:
                pass  # a damaged copy from an earlier write: replace it
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, functools.partial(copy_blob_verified, store, desc))
    layout_file = root / OCI_LAYOUT_FILE
    if not layout_file.exists():
        _atomic_write(layout_file, lambda f: f.write(layout_file_bytes()))
    manifests = _merge_entry(existing or [], entry)
    # index.json last: a reader never sees it point at a blob not yet written.
    _atomic_write(root / INDEX_FILE, lambda f: f.write(index_bytes(manifests)))


def _merge_entry(manifests: list[Descriptor], entry: Descriptor) -> list[Descriptor]:
    ref = entry.annotation(ANNOTATION_REF_NAME)
    kept = []
    for m in manifests:
        if ref is not None and m.annotation(ANNOTATION_REF_NAME) == ref:
            continue  # the name moves to the new image, as skopeo does
        if m == entry:
            continue
        kept.append(m)
    return [*kept, entry]


def _atomic_write(target: Path, fill: Callable[[IO[bytes]], object]) -> None:
    with open_archive_dest(target) as f:
        fill(f)


class OCILayoutExporter:
    """The `type=oci` exporter."""

    def __init__(self, dest: Dest, *, tar: bool = True, ref_name: str | None = None) -> None:
        self.dest = dest
        self.tar = tar
        self.ref_name = ref_name

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        return write_oci_layout(store, descriptor, self.dest, tar=self.tar, ref_name=self.ref_name)


# -- reading --------------------------------------------------------------------------------


class _Source(Protocol):
    where: str

    def open(self, name: str) -> BinaryIO: ...

    def close(self) -> None: ...


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = f"OCI layout {root}"

    def open(self, name: str) -> BinaryIO:
        path = self.root / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise NotFoundError(f"{self.where} has no {name}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{self.where}: {name} is not a regular file")
        return open(path, "rb")

    def close(self) -> None:
        pass


class _TarSource:
    def __init__(self, path: Path) -> None:
        self.where = f"OCI archive {path}"
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        except tarfile.TarError as exc:
            raise UserError(f"{path} is not a tar archive ({exc})") from None
        # One pass over the headers; later names win, as on extraction.
        self._members: dict[str, tarfile.TarInfo] = {}
        for info in self._tar.getmembers():
            self._members[os.path.normpath(info.name).lstrip("/")] = info

    def open(self, name: str) -> BinaryIO:
        info = self._members.get(name)
        if info is None:
            raise NotFoundError(f"{self.where} has no {name}")
        if not info.isreg():
            raise UserError(f"{self.where}: {name} is not a regular file")
        f = self._tar.extractfile(info)
        assert f is not None
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()


def _read_small(source: _Source, name: str, limit: int = _MAX_JSON) -> bytes:
    with source.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{source.where}: {name} is larger than {limit} bytes")
    return data


def _select(entries: tuple[Descriptor, ...], ref: str | None, where: str) -> Descriptor:
    if not entries:
        raise NotFoundError(f"{where}: index.json lists no images")

    def names(d: Descriptor) -> list[str]:
        return [n for n in (d.annotation(ANNOTATION_REF_NAME),
                            d.annotation(ANNOTATION_IMAGE_NAME)) if n]

    if ref is None:
        matches = list(entries)
    elif ref.startswith("sha256:"):
        matches = [d for d in entries if d.digest == ref]
    else:
        wanted = {ref}
        with contextlib.suppress(UserError):  # `app:1` also finds docker.io/library/app:1
            wanted.add(str(Reference.parse(ref)))
        matches = [d for d in entries if wanted & set(names(d))]
    if len({d.digest for d in matches}) == 1:
        return matches[0]
    available = sorted({n for d in entries for n in names(d)}) or ["(unnamed images only)"]
    if not matches:
        raise NotFoundError(
            f"{where} has no image named {ref!r}", hint=f"available: {', '.join(available)}"
        )
    raise UserError(
        f"{where} holds {len(matches)} images; choose one by name",
        code="ambiguous-image",
        hint=f"available: {', '.join(available)}",
    )


class LayoutDir:
    """An OCI layout directory read lazily, blob by blob (a build cache's `src=`): every
    read is checked against its descriptor, as `read_oci_layout` checks them."""

    def __init__(self, root: Path) -> None:
        self._source = _DirSource(root)
        self.where = self._source.where

    def select(self, ref: str | None) -> Descriptor:
        """The index.json entry named `ref` (a ref name, an image name or a digest)."""
        index = Index.parse(_read_small(self._source, INDEX_FILE),
                            where=f"{self.where} index.json")
        return _select(index.manifests, ref, self.where)

    def read(self, desc: Descriptor) -> bytes:
        """A small blob (a manifest, a config)."""
        data = _read_small(self._source, blob_path(desc.digest))
        _check_bytes(data, desc, where=self.where)
        return data

    def copy_into(self, store: ContentStore, desc: Descriptor) -> None:
        """Bring one blob into `store` (not again if it is there)."""
        _import(self._source, store, desc, set(), "the layout's index")


def read_oci_layout(path_or_tar: str | os.PathLike[str], store: ContentStore,
                    ref: str | None) -> Descriptor:
    """Import the image named `ref` (or the only one) from a layout directory or archive.

    Every blob reachable from that image is checked against its descriptor (digest and
    size) before it is published in the store; children are stored before their parents.
    Returns the image descriptor, without the naming annotations.
    """
    path = Path(path_or_tar)
    if path.is_dir():
        source: _Source = _DirSource(path)
    elif path.exists():
        source = _TarSource(path)
    else:
        raise NotFoundError(f"{path} does not exist")
    try:
        try:
            layout = json.loads(_read_small(source, OCI_LAYOUT_FILE, 1 << 16))
        except NotFoundError:
            raise UserError(
                f"{source.where} is not an OCI image layout (no oci-layout file)",
                hint="`docker save` archives are OCI layouts only since Docker 25",
            ) from None
        except ValueError as exc:
            raise UserError(f"{source.where}: oci-layout is not JSON ({exc})") from None
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise UserError(f"{source.where}: oci-layout has no imageLayoutVersion")
        index = Index.parse(_read_small(source, INDEX_FILE), where=f"{source.where} index.json")
        chosen = _select(index.manifests, ref, source.where)
        _import(source, store, chosen, set(), "index.json")
        return _unnamed(chosen)
    finally:
        source.close()


def _import(source: _Source, store: ContentStore, desc: Descriptor, done: set[Digest],
            parent: str) -> None:
    if desc.digest in done:
        return
    done.add(desc.digest)
    name = blob_path(desc.digest)
    if _is_index(desc) or _is_manifest(desc):
        try:
            data = _read_small(source, name)
        except NotFoundError:
            raise NotFoundError(
                f"{source.where} lacks blob {desc.digest} (referenced by {parent})"
            ) from None
        _check_bytes(data, desc, where=source.where)
        kind = "index" if _is_index(desc) else "manifest"
        for child in _children(desc, data):
            _import(source, store, child, done, f"{kind} {desc.digest}")
        store.write(data, expected=desc.digest)
        return
    if store.has(desc.digest):
        if store.size(desc.digest) != desc.size:
            raise IntegrityError(
                f"blob {desc.digest}: the content store has {store.size(desc.digest)} bytes, "
                f"the descriptor in {source.where} says {desc.size}"
            )
        return
    try:
        f = source.open(name)
    except NotFoundError:
        if _is_foreign(desc):
            return
        raise NotFoundError(
            f"{source.where} lacks blob {desc.digest} (referenced by {parent})"
        ) from None
    with f, store.writer() as w:
        reader = VerifyingReader(f, desc, source.where)
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := reader.readinto(buf):
            w.write(view[:n])
        reader.finish()
        w.commit(desc.digest, desc.size)

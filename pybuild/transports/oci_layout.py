"""OCI image layouts (image-spec image-layout.md): the `oci:DIR` transport, and the reader
of its archive form (`oci-archive:FILE`), in one place as ggcr's `pkg/v1/layout` is.

A layout is `oci-layout`, `index.json` and `blobs/<alg>/<hex>`. Writing a directory
streams every blob (never whole layers in memory), re-hashes it on the way out, and
writes index.json last, so a reader never sees it point at a blob not yet there.
Reading checks every blob against its descriptor before it is published in the store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader
from pybuild.content.walk import walk
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.oci.descriptor import Descriptor, Index
from pybuild.transports.archive import blob_path, copy_blob_verified
from pybuild.transports.destination import replace_file
from pybuild.transports.layout_index import (
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    image_names,
    index_bytes,
    layout_file_bytes,
    merge_entry,
    named_entries,
    select_entry,
    unnamed,
)
from pybuild.transports.layout_source import (
    DirSource,
    Source,
    import_blob,
    import_image,
    open_source,
    read_blob,
    read_index,
    read_small,
)
from pybuild.transports.names import ImportedImage


def read_layout(path: str | os.PathLike[str], store: ContentStore, *, name: str | None = None,
                digest: Digest | None = None, index: int | None = None) -> ImportedImage:
    """Import one image from a layout directory or archive at `path` into `store`.

    The image is chosen by `name` (a ref name or image name), `digest` or `index`; with
    none, the layout must hold one image. Everything reachable from it is verified
    (digest and size) before it is published, children before parents."""
    source = open_source(Path(path))
    try:
        return read_from(source, store, name=name, digest=digest, index=index)
    finally:
        source.close()


def read_from(source: Source, store: ContentStore, *, name: str | None = None,
              digest: Digest | None = None, index: int | None = None) -> ImportedImage:
    entries = read_index(source).manifests
    chosen = select_entry(entries, source.where, name=name, digest=digest, index=index)
    import_image(source, store, chosen)
    return ImportedImage(descriptor=unnamed(chosen), names=image_names(entries, chosen.digest))


def read_all(path: str | os.PathLike[str], store: ContentStore) -> list[ImportedImage]:
    """Import every image a layout directory or archive lists (each digest once, in the
    order of index.json), with the names it records for each."""
    source = open_source(Path(path))
    try:
        return read_all_from(source, store)
    finally:
        source.close()


def read_all_from(source: Source, store: ContentStore) -> list[ImportedImage]:
    entries = read_index(source).manifests
    if not entries:
        raise NotFoundError(f"{source.where}: index.json lists no images")
    first: dict[Digest, Descriptor] = {}
    for entry in entries:
        first.setdefault(entry.digest, entry)
    out = []
    for digest, entry in first.items():
        import_image(source, store, entry)
        out.append(ImportedImage(descriptor=unnamed(entry), names=image_names(entries, digest)))
    return out


def read_oci_layout(path_or_tar: str | os.PathLike[str], store: ContentStore,
                    ref: str | None) -> Descriptor:
    """`read_layout` by one selector string: a digest (`sha256:...`) or a name."""
    if ref is not None and ref.startswith("sha256:"):
        return read_layout(path_or_tar, store, digest=Digest(ref)).descriptor
    return read_layout(path_or_tar, store, name=ref).descriptor


class LayoutDir:
    """An OCI layout directory read lazily, blob by blob (a build cache's `src=`): every
    read is checked against its descriptor, as `read_layout` checks them."""

    def __init__(self, root: Path) -> None:
        self._source = DirSource(root)
        self.where = self._source.where

    def select(self, *, name: str | None = None, digest: Digest | None = None) -> Descriptor:
        """The index.json entry named `name` (a ref name or an image name) or with manifest
        `digest`; with neither, the only one."""
        entries = Index.parse(read_small(self._source, INDEX_FILE),
                              where=f"{self.where} index.json").manifests
        return select_entry(entries, self.where, name=name, digest=digest)

    def read(self, desc: Descriptor) -> bytes:
        """A small blob (a manifest, a config)."""
        return read_blob(self._source, desc)

    def copy_into(self, store: ContentStore, desc: Descriptor) -> None:
        """Bring one blob into `store` (not again if it is there)."""
        import_blob(self._source, store, desc, parent="the layout's index")


# -- writing a directory --------------------------------------------------------------


def write_layout(store: ContentStore, descriptor: Descriptor, root: str | os.PathLike[str],
                 *, names: Sequence[str] = ()) -> Descriptor:
    """Write the image `descriptor` (a manifest or an index, with all children) into the
    layout directory `root`: an existing layout there is added to (an entry with the same
    ref name is replaced), anything else non-empty is refused; a missing `root` is made.
    One index.json entry per name (see `layout_name` for how a name is read). Returns the
    first entry as recorded in index.json."""
    entries = named_entries(descriptor, names)
    parts = walk(store, descriptor, strict=True, what="the exported image")
    path = Path(root)
    existing = _existing_index(path)
    path.mkdir(parents=True, exist_ok=True)  # a directory output is made, as buildx does
    for desc in parts.in_order:
        _write_blob(store, desc, path)
    layout_file = path / OCI_LAYOUT_FILE
    if not layout_file.exists():
        with replace_file(layout_file) as f:
            f.write(layout_file_bytes())
    manifests = existing or []
    for entry in entries:
        manifests = merge_entry(manifests, entry)
    # index.json last: a reader never sees it point at a blob not yet written.
    with replace_file(path / INDEX_FILE) as f:
        f.write(index_bytes(manifests))
    return entries[0]


def _write_blob(store: ContentStore, desc: Descriptor, root: Path) -> None:
    target = root / blob_path(desc.digest)
    if target.is_file() and not target.is_symlink():
        try:
            with open(target, "rb") as f:
                VerifyingReader(f, desc.digest, desc.size, where=f"layout {root}").drain()
            return
        except IntegrityError:
            pass  # a damaged copy from an earlier write: replace it
    target.parent.mkdir(parents=True, exist_ok=True)
    with replace_file(target, what="blob") as f:
        copy_blob_verified(store, desc, f)


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

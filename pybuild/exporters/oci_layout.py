"""The `type=oci` exporter, over the OCI layout transport (`pybuild.transports`).

The layout reader and writer, the deterministic archive and the verified blob copy that
lived here moved to `pybuild.transports` and `pybuild.content.verify`; their old names
are re-exported below for the callers not switched yet.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader as _VerifyingReader
from pybuild.content.walk import walk
from pybuild.errors import UserError
from pybuild.oci.descriptor import Descriptor

# moved to pybuild/transports/*; the lead removes this shim
from pybuild.transports.archive import (
    ARCHIVE_MTIME,
    ArchiveWriter,
    blob_path,
    copy_blob_verified,
)
from pybuild.transports.destination import Dest
from pybuild.transports.destination import open_destination as open_archive_dest
from pybuild.transports.layout_index import (
    INDEX_FILE,
    LAYOUT_VERSION,
    OCI_LAYOUT_FILE,
    LayoutName,
    index_bytes,
    layout_file_bytes,
    layout_name,
    named_descriptor,
)
from pybuild.transports.oci_archive import write_oci_archive
from pybuild.transports.oci_layout import LayoutDir, read_oci_layout, write_layout

__all__ = [
    "ARCHIVE_MTIME",
    "INDEX_FILE",
    "LAYOUT_VERSION",
    "OCI_LAYOUT_FILE",
    "ArchiveWriter",
    "Dest",
    "LayoutDir",
    "LayoutName",
    "OCILayoutExporter",
    "VerifyingReader",
    "blob_path",
    "copy_blob_verified",
    "image_blobs",
    "index_bytes",
    "layout_file_bytes",
    "layout_name",
    "named_descriptor",
    "open_archive_dest",
    "read_oci_layout",
    "write_oci_layout",
]


class VerifyingReader(_VerifyingReader):
    """The old signature, `(src, descriptor, where)`.

    moved to pybuild/content/verify.py; the lead removes this shim"""

    def __init__(self, src: BinaryIO, desc: Descriptor, where: str) -> None:
        super().__init__(src, desc.digest, desc.size, where=where)


def image_blobs(store: ContentStore, descriptor: Descriptor) -> list[Descriptor]:
    """moved to `pybuild.content.walk.walk(strict=True).in_order`; the lead removes this"""
    return list(walk(store, descriptor, strict=True, what="the exported image").in_order)


def write_oci_layout(store: ContentStore, descriptor: Descriptor, dest: Dest, *, tar: bool,
                     ref_name: str | None) -> Descriptor:
    """Write the image as an OCI archive (`tar=True`: `dest` is a path, `-`, a device or
    a stream) or layout directory (`tar=False`). Returns the index.json entry."""
    if tar:
        return write_oci_archive(store, descriptor, dest, ref_name=ref_name)
    if not isinstance(dest, str | os.PathLike):
        raise UserError("an OCI layout directory needs a path, not a stream (use tar=true)")
    return write_layout(store, descriptor, dest, ref_name=ref_name)


class OCILayoutExporter:
    """The `type=oci` exporter."""

    def __init__(self, dest: Dest, *, tar: bool = True, ref_name: str | None = None) -> None:
        self.dest = dest
        self.tar = tar
        self.ref_name = ref_name

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        return write_oci_layout(store, descriptor, self.dest, tar=self.tar, ref_name=self.ref_name)

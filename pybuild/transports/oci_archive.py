"""`oci-archive:FILE`: an OCI image layout as one tar, written byte-stable.

Entries: `blobs/`, `blobs/<alg>/`, every blob sorted by path, `index.json`, `oci-layout`,
with fixed metadata (see `archive.ArchiveWriter`). Reading is the layout reader's
(`oci_layout.read_layout` opens either form).
"""

from __future__ import annotations

from collections.abc import Sequence

from pybuild.content.store import ContentStore
from pybuild.content.walk import walk
from pybuild.oci.descriptor import Descriptor
from pybuild.transports.archive import MODE_BLOB, ArchiveWriter
from pybuild.transports.destination import Dest, open_destination
from pybuild.transports.layout_index import (
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    index_bytes,
    layout_file_bytes,
    named_entries,
)


def write_oci_archive(store: ContentStore, descriptor: Descriptor, dest: Dest, *,
                      names: Sequence[str] = ()) -> Descriptor:
    """Write the image `descriptor` (a manifest or an index, with all children) as an OCI
    archive to `dest` (a path, `-`, a device or a stream; see `destination`), with one
    index.json entry per name (`layout_index.layout_name` reads them). Returns the first
    entry as recorded in index.json."""
    entries = named_entries(descriptor, names)
    parts = walk(store, descriptor, strict=True, what="the exported image")
    with open_destination(dest, what="OCI archive") as out:
        archive = ArchiveWriter(out)
        archive.add_blobs(store, parts.in_order)
        archive.add_bytes(INDEX_FILE, index_bytes(entries))
        archive.add_bytes(OCI_LAYOUT_FILE, layout_file_bytes(), mode=MODE_BLOB)
        archive.close()
    return entries[0]

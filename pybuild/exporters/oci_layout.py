"""The `type=oci` exporter, over the OCI layout transport (`pybuild.transports`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pybuild.content.store import ContentStore
from pybuild.errors import UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.transports.destination import Dest
from pybuild.transports.oci_archive import write_oci_archive
from pybuild.transports.oci_layout import write_layout

__all__ = ["OCILayoutExporter"]


class OCILayoutExporter:
    """The `type=oci` exporter: an OCI archive (`tar=True`: `dest` is a path, `-`, a
    device or a stream) or a layout directory, with one index.json entry per name."""

    def __init__(self, dest: Dest, *, tar: bool = True, names: Sequence[str] = ()) -> None:
        self.dest = dest
        self.tar = tar
        self.names = tuple(names)

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        if self.tar:
            return write_oci_archive(store, descriptor, self.dest, names=self.names)
        if not isinstance(self.dest, str | os.PathLike):
            raise UserError("an OCI layout directory needs a path, not a stream (use tar=true)")
        return write_layout(store, descriptor, self.dest, names=self.names)

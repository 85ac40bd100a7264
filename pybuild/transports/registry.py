"""`docker://REF`: an image in a registry, over `pybuild.registry`'s pull and push."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.transports.names import ImportedImage, RegistryLocation

if TYPE_CHECKING:
    from pybuild.registry import RegistryOptions


def pull_image(location: RegistryLocation, store: ContentStore, *,
               platforms: Sequence[Platform] | None = None,
               options: RegistryOptions | None = None) -> ImportedImage:
    """Pull into the store (every blob verified by the registry client)."""
    from pybuild.registry import pull_sync  # httpx and TLS: only when a registry is used

    desc = pull_sync(location.reference, store, platforms=platforms, options=options)
    return ImportedImage(descriptor=desc, names=(str(location.reference),))


def push_image(store: ContentStore, descriptor: Descriptor, location: RegistryLocation, *,
               options: RegistryOptions | None = None) -> Digest:
    """Push the image as it is in the store (compress it first: `layers.recompress`)."""
    from pybuild.registry import push_sync

    return push_sync(store, descriptor, location.reference, options=options)

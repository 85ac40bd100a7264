"""Images to and from registries, for the façade and for a build's `--push`."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from pybuild.request import PushReport

if TYPE_CHECKING:
    from pybuild.layers.recompress import LayerCompression
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform
    from pybuild.oci.reference import Reference
    from pybuild.registry import RegistryOptions
    from pybuild.root import Root


def push(root: Root, image: Descriptor, ref: Reference, *,
         registry: RegistryOptions | None = None, insecure: bool = False,
         compression: str | LayerCompression = "gzip", by_digest: bool = False) -> PushReport:
    """Push an image (manifest or index) from the content store, its layers compressed
    as asked (a build's image output has converted it already: nothing changes then);
    the report names the digest the registry now has."""
    from pybuild.layers.recompress import compress_image
    from pybuild.oci.reference import Reference as Ref
    from pybuild.registry import RegistryOptions as Options
    from pybuild.registry import push_sync
    from pybuild.startup import enable_tls

    enable_tls()
    packed = compress_image(root.content, image, compression, root.compression_memo)
    options = registry
    if insecure:
        options = dataclasses.replace(registry or Options(), insecure=True)
    target = Ref(domain=ref.domain, path=ref.path, digest=packed.digest) if by_digest else ref
    digest = push_sync(root.content, packed, target, options=options)
    return PushReport(reference=Ref(domain=ref.domain, path=ref.path,
                                    tag="" if by_digest else ref.tag).familiar,
                      digest=digest, descriptor=packed)


def pull(root: Root, ref: Reference, platforms: list[Platform] | None, *,
         registry: RegistryOptions | None = None) -> Descriptor:
    """Pull into the store and name it; one platform records just its manifest."""
    from pybuild.content.walk import resolve_platform
    from pybuild.oci import mediatypes as mt
    from pybuild.oci.descriptor import Descriptor as Desc
    from pybuild.registry import pull_sync
    from pybuild.startup import enable_tls

    enable_tls()
    desc = pull_sync(ref, root.content, platforms=platforms, options=registry)
    recorded = desc
    if platforms is not None and len(platforms) == 1 and desc.media_type in mt.INDEX_TYPES:
        recorded = resolve_platform(root.content, desc, platforms[0], name=ref.familiar)
    root.images.put(ref, Desc(media_type=recorded.media_type, digest=recorded.digest,
                              size=recorded.size, platform=recorded.platform),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return recorded

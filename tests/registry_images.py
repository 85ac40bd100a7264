"""Small synthetic images for registry tests: a config and layers of random bytes, written into
a content store (the registry neither unpacks nor checks layers, and neither does a pull)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from pybuild.canonical import canonical_json
from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform


def blob(store: ContentStore, data: bytes, media_type: str) -> Descriptor:
    store.write(data)
    return Descriptor(media_type=media_type, digest=Digest.from_bytes(data), size=len(data))


def random_image(store: ContentStore, *, sizes: Sequence[int] = (3 << 20,), seed: int = 1,
                 arch: str = "amd64", base: Sequence[Descriptor] = ()) -> Descriptor:
    """An OCI image manifest whose layers are `base` plus random blobs of these sizes."""
    rng = random.Random(seed)
    layers = list(base) + [blob(store, rng.randbytes(n), mt.OCI_LAYER_GZIP) for n in sizes]
    config = {"architecture": arch, "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [str(x.digest) for x in layers]},
              "config": {"Labels": {"seed": str(seed)}}}
    cfg = blob(store, canonical_json(config), mt.OCI_CONFIG)
    data = Manifest(media_type=mt.OCI_MANIFEST, config=cfg, layers=tuple(layers)).encode()
    store.write(data)
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(data),
                      size=len(data), platform=Platform.parse(f"linux/{arch}"))


def layers_of(store: ContentStore, desc: Descriptor) -> tuple[Descriptor, ...]:
    return Manifest.parse(store.read(desc.digest)).layers


def manifest_json(store: ContentStore, desc: Descriptor) -> dict[str, object]:
    value = json.loads(store.read(desc.digest))
    assert isinstance(value, dict)
    return value

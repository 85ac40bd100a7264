"""Image assembly: a solved filesystem plus the frontend's config -> manifest (and an
index for several platforms), written to the content store. Pure over the store, as
go-containerregistry's `mutate` is."""

from __future__ import annotations

import dataclasses
import time

from pybuild.builder.result import Solved
from pybuild.content.store import ContentStore
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest

# The comment BuildKit's Dockerfile frontend writes in the history of its own steps.
DOCKERFILE_HISTORY_COMMENT = "buildkit.dockerfile.v0"


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def assemble(store: ContentStore, config: ImageConfig, solved: Solved, *,
             source_date_epoch: int | None = None) -> tuple[Descriptor, ImageConfig]:
    """Write the config and the manifest of one platform's image; returns the manifest's
    descriptor (with the platform) and the final config."""
    layers = solved.real_layers
    if source_date_epoch is not None:
        created = rfc3339(source_date_epoch)
    elif solved.created:
        created = rfc3339(solved.created)
    else:
        created = config.created
    history = align_history(config.history, solved.layers, created)
    final = config.replace(diff_ids=tuple(x.diff_id for x in layers), history=history,
                           created=created)
    config_bytes = final.encode()
    config_digest = store.write(config_bytes)
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(media_type=mt.OCI_CONFIG, digest=config_digest,
                          size=len(config_bytes)),
        layers=tuple(Descriptor(media_type=x.media_type, digest=x.digest, size=x.size)
                     for x in layers),
    )
    manifest_bytes = manifest.encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(manifest_bytes),
                      size=len(manifest_bytes), platform=final.platform)
    return desc, final


def align_history(history: tuple[History, ...], layers: tuple[object, ...],
                  created: str) -> tuple[History, ...]:
    """Match history entries to the solved layers (from the end: a base image's own
    history may be incomplete); a step whose diff was empty becomes an empty layer; the
    build's own entries get the image's creation time."""
    layer_entries = [i for i, h in enumerate(history) if not h.empty_layer]
    out = list(history)
    for idx, layer in zip(reversed(layer_entries), reversed(layers), strict=False):
        if layer is None:
            out[idx] = dataclasses.replace(out[idx], empty_layer=True)
    for i, h in enumerate(out):
        if not h.created and h.comment == DOCKERFILE_HISTORY_COMMENT:
            out[i] = dataclasses.replace(h, created=created)
    return tuple(out)


def make_index(store: ContentStore, manifests: list[Descriptor]) -> Descriptor:
    index = Index(media_type=mt.OCI_INDEX, manifests=tuple(manifests))
    data = index.encode()
    return Descriptor(media_type=mt.OCI_INDEX, digest=store.write(data), size=len(data))

"""The cache artifact: the OCI image that `--cache-to` writes and `--cache-from` reads.

An image manifest whose config (`application/vnd.pybuild.cache.config.v1+json`) lists
cache records, key, step description and the result's layers, and whose layers are those
layers' blobs (compressed, gzip by default, like BuildKit's). Keys are opaque hashes of
the op, its inputs' keys and the content of the files it reads, so they match across
machines and checkouts. A record's key parts (build-arg values, file lists) and the
expanded text of its step name stay home: a build arg may hold something its owner would
not publish.

Encoding and decoding only, no I/O: where the artifact goes, and how layers get
compressed for it, is `builder.remote_cache`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pybuild.errors import UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Manifest

CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
ARTIFACT_TYPE = "application/vnd.pybuild.cache.v1"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ExportRecord:
    key: str
    step: str
    description: str
    result: dict[str, Any]  # Solved.to_json(): {"layers": [...], "created": ...}


class StoredRecord(Protocol):
    """What `export_records_for` needs of a local cache record (cache.store.CacheRecord)."""

    @property
    def cache_key(self) -> str: ...

    @property
    def step(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def result(self) -> dict[str, Any]: ...


def record_layers(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A result's layers, without the markers of empty ones (None)."""
    return [x for x in result.get("layers", []) if x]


def bare_description(description: str) -> str:
    """"[app 3/5] RUN make TOKEN=…" -> "[app 3/5] RUN": step names show expanded build
    args, which stay home."""
    label, sep, instruction = description.partition("] ")
    return f"{label}{sep}{instruction.split(' ', 1)[0]}" if sep else ""


def export_records_for(cache_records: Iterable[StoredRecord]) -> list[ExportRecord]:
    """Local cache records as exportable ones (without their key parts)."""
    return [ExportRecord(key=rec.cache_key, step=rec.step,
                         description=bare_description(rec.description), result=rec.result)
            for rec in cache_records]


def encode_config(records: Iterable[ExportRecord],
                  packed: Mapping[str, Descriptor]) -> bytes:
    """The config blob: every record, its layers replaced by their packed (compressed)
    blobs, `packed` mapping a stored layer digest to its packed descriptor."""
    out: list[dict[str, Any]] = []
    for rec in records:
        layers: list[dict[str, Any] | None] = []
        for layer in rec.result.get("layers", []):
            if not layer:
                layers.append(None)
                continue
            blob = packed[layer["digest"]]
            layers.append({"digest": str(blob.digest), "diff_id": layer["diff_id"],
                           "size": blob.size, "media_type": blob.media_type})
        out.append({"key": rec.key, "step": rec.step, "description": rec.description,
                    "result": {**rec.result, "layers": layers}})
    return json.dumps({"version": FORMAT_VERSION, "records": out},
                      sort_keys=True, separators=(",", ":")).encode()


def artifact_manifest(config: Descriptor, layers: Iterable[Descriptor]) -> Manifest:
    """The manifest of the artifact: the config, then each packed layer once."""
    unique = tuple({d.digest: d for d in layers}.values())
    return Manifest(media_type=mt.OCI_MANIFEST, config=config, layers=unique,
                    artifact_type=ARTIFACT_TYPE)


def decode_config(data: bytes, where: str) -> list[dict[str, Any]]:
    """The records of a config blob; a UserError if it is not one pybuild wrote."""
    try:
        doc = json.loads(data)
        records = doc["records"]
        if doc.get("version") != FORMAT_VERSION or not isinstance(records, list):
            raise ValueError("unknown format version")
        for rec in records:
            _ = (str(rec["key"]), rec["result"]["layers"])
        return list(records)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where}: not a pybuild cache ({exc})", code="cache-format") from None


def decode_manifest(data: bytes, where: str) -> Manifest:
    """The artifact's manifest; a UserError if its config is not a pybuild cache's."""
    manifest = Manifest.parse(data, where=where)
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        raise UserError(f"{where}: not a pybuild cache (config media type "
                        f"{manifest.config.media_type})", code="cache-format",
                        hint="a cache written by BuildKit cannot be read by pybuild")
    return manifest

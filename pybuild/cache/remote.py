"""`--cache-to` / `--cache-from`: build cache shared between machines, as buildx's `local`
and `registry` cache backends do.

What travels is an OCI artifact: an image manifest whose config
(`application/vnd.pybuild.cache.config.v1+json`) lists cache records — key, step
description, and the result's layers — and whose layers are those layers' blobs
(compressed, gzip by default, like BuildKit's). Keys are opaque hashes of the op, its
inputs' keys and the content of the files it reads, so they match across machines and
checkouts. A record's key parts (build-arg values, file lists) and the expanded text of its
step name stay home: a build arg may hold something its owner would not publish.

`mode=min` (the default, as in buildx) exports the records of the steps whose layers are
in the result; `mode=max` every step of the build. Importing is lazy: the config is read
at the start, and a record's blobs are fetched only when the solver would otherwise run
its step; the record is then copied into the local cache.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import PybuildError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Manifest

CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
ARTIFACT_TYPE = "application/vnd.pybuild.cache.v1"
_FORMAT_VERSION = 1
_TYPES = ("local", "registry")
_UNSUPPORTED = {
    "inline": "pybuild does not embed cache metadata in images; use type=registry,ref=… "
              "(a separate cache image) or type=local",
    "gha": "the GitHub Actions cache service is not reachable from pybuild; use "
           "type=local with the runner's cache directory, or type=registry",
    "s3": "the S3 cache backend is not supported; use type=registry or type=local",
    "azblob": "the Azure Blob cache backend is not supported; use type=registry or "
              "type=local",
}


@dataclass(frozen=True, slots=True)
class CacheOption:
    """One `--cache-to` or `--cache-from` value, parsed."""

    type: str
    attrs: tuple[tuple[str, str], ...] = ()
    text: str = ""  # as the user wrote it, for messages

    def get(self, name: str, default: str = "") -> str:
        return dict(self.attrs).get(name, default)

    @property
    def mode(self) -> str:
        return self.get("mode", "min")

    @property
    def where(self) -> str:
        return self.get("ref") or self.get("dest") or self.get("src")


def parse_cache_option(text: str, *, flag: str) -> CacheOption:
    """`type=local,dest=DIR`, `type=registry,ref=REF,mode=max`, or a bare REF (registry)."""
    text = text.strip()
    if not text:
        raise UserError(f"{flag}: empty value")
    if "=" not in text.split(",", 1)[0]:
        return CacheOption(type="registry", attrs=(("ref", text),), text=text)
    attrs: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"{flag} {text!r}: {item!r} is not KEY=VALUE")
        attrs[name.strip().lower()] = value.strip()
    kind = attrs.pop("type", "registry" if "ref" in attrs else "")
    if kind in _UNSUPPORTED:
        raise UserError(f"{flag} type={kind} is not supported", code="cache-backend",
                        hint=_UNSUPPORTED[kind])
    if kind not in _TYPES:
        raise UserError(f"{flag} {text!r}: unknown cache type {kind!r} (use local or "
                        "registry)", code="cache-backend")
    exporting = flag == "--cache-to"
    need = "ref" if kind == "registry" else ("dest" if exporting else "src")
    if not attrs.get(need):
        raise UserError(f"{flag} type={kind} needs {need}=…")
    if attrs.get("mode", "min") not in ("min", "max"):
        raise UserError(f"{flag}: mode must be min or max, not {attrs['mode']!r}")
    if attrs.get("compression", "gzip") not in ("gzip", "zstd", "uncompressed"):
        raise UserError(f"{flag}: compression must be gzip, zstd or uncompressed")
    return CacheOption(type=kind, attrs=tuple(sorted(attrs.items())), text=text)


# -- export ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportRecord:
    key: str
    step: str
    description: str
    result: dict[str, Any]  # Solved.to_json(): {"layers": [...], "created": ...}


def _layers(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in result.get("layers", []) if x]


def build_cache_manifest(store: ContentStore, records: Iterable[ExportRecord],
                         compression: str, memo_path: Path | None) -> Descriptor:
    """Write the cache config and manifest into the store (layers compressed as asked);
    the manifest's descriptor."""
    from pybuild.exporters.recompress import compress_layer

    seen: dict[str, Descriptor] = {}
    out_records: list[dict[str, Any]] = []
    for rec in records:
        layers: list[dict[str, Any] | None] = []
        for layer in rec.result.get("layers", []):
            if not layer:
                layers.append(None)
                continue
            packed = seen.get(layer["digest"])
            if packed is None:
                desc = Descriptor(media_type=layer["media_type"], digest=Digest(layer["digest"]),
                                  size=int(layer["size"]))
                packed = compress_layer(store, desc, compression, memo_path)
                seen[layer["digest"]] = packed
            layers.append({"digest": str(packed.digest), "diff_id": layer["diff_id"],
                           "size": packed.size, "media_type": packed.media_type})
        out_records.append({"key": rec.key, "step": rec.step, "description": rec.description,
                            "result": {**rec.result, "layers": layers}})
    config = json.dumps({"version": _FORMAT_VERSION, "records": out_records},
                        sort_keys=True, separators=(",", ":")).encode()
    config_desc = Descriptor(media_type=CONFIG_MEDIA_TYPE, digest=store.write(config),
                             size=len(config))
    unique = list({d.digest: d for d in seen.values()}.values())
    manifest = Manifest(media_type=mt.OCI_MANIFEST, config=config_desc,
                        layers=tuple(unique), artifact_type=ARTIFACT_TYPE)
    raw = manifest.encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(raw), size=len(raw))


def export_cache(store: ContentStore, option: CacheOption, records: list[ExportRecord], *,
                 memo_path: Path | None, registry_options: Any = None) -> Descriptor:
    """Write the records to where `option` says; the cache manifest's descriptor."""
    desc = build_cache_manifest(store, records, option.get("compression", "gzip"), memo_path)
    if option.type == "local":
        from pybuild.exporters.oci_layout import write_oci_layout

        write_oci_layout(store, desc, option.get("dest"), tar=False,
                         ref_name=option.get("tag", "latest"))
    else:
        from pybuild.registry import push_sync

        push_sync(store, desc, option.get("ref"), options=registry_options)
    return desc


# -- import ---------------------------------------------------------------------------------


@dataclass
class ImportedCache:
    """The records of every `--cache-from` source, by key (the first source wins)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _fetchers: dict[str, Callable[[list[Descriptor]], None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, source: str, records: list[dict[str, Any]],
            fetch: Callable[[list[Descriptor]], None]) -> None:
        self._fetchers[source] = fetch
        for rec in records:
            self.records.setdefault(str(rec["key"]), {**rec, "source": source})

    def fetch(self, store: ContentStore, record: dict[str, Any]) -> None:
        """Bring the record's layer blobs into the store (verified)."""
        missing = [Descriptor(media_type=x["media_type"], digest=Digest(x["digest"]),
                              size=int(x["size"]))
                   for x in _layers(record["result"]) if not store.has(Digest(x["digest"]))]
        if missing:
            with self._lock:  # one transfer per source at a time keeps it simple
                self._fetchers[record["source"]](missing)


def _parse_config(data: bytes, where: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(data)
        records = doc["records"]
        if doc.get("version") != _FORMAT_VERSION or not isinstance(records, list):
            raise ValueError("unknown format version")
        for rec in records:
            _ = (str(rec["key"]), rec["result"]["layers"])
        return list(records)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where}: not a pybuild cache ({exc})", code="cache-format") from None


def _cache_manifest(data: bytes, where: str) -> Manifest:
    manifest = Manifest.parse(data, where=where)
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        raise UserError(f"{where}: not a pybuild cache (config media type "
                        f"{manifest.config.media_type})", code="cache-format",
                        hint="a cache written by BuildKit cannot be read by pybuild")
    return manifest


def _import_local(option: CacheOption, store: ContentStore,
                  cache: ImportedCache) -> None:
    from pybuild.exporters.oci_layout import LayoutDir

    layout = LayoutDir(Path(option.get("src")))
    entry = layout.select(option.get("digest") or option.get("tag", "latest"))
    manifest = _cache_manifest(layout.read(entry), f"{layout.where}@{entry.digest}")
    records = _parse_config(layout.read(manifest.config), layout.where)

    def fetch(blobs: list[Descriptor]) -> None:
        for desc in blobs:
            layout.copy_into(store, desc)

    cache.add(f"local:{option.get('src')}", records, fetch)


def _import_registry(option: CacheOption, store: ContentStore, cache: ImportedCache,
                     registry_options: Any) -> None:
    from pybuild.registry import pull_blobs_sync, resolve_sync

    ref = option.get("ref")
    desc, data = resolve_sync(ref, options=registry_options)
    manifest = _cache_manifest(data, f"{ref}@{desc.digest}")
    # The config comes through the same verified blob fetch as the layers (into the store,
    # where GC drops it once nothing references it).
    pull_blobs_sync(ref, [manifest.config], store, options=registry_options)
    records = _parse_config(store.read(manifest.config.digest, what="cache config"), ref)
    cache.add(f"registry:{ref}", records,
              lambda blobs: pull_blobs_sync(ref, blobs, store, options=registry_options))


def import_caches(options: Iterable[CacheOption], store: ContentStore, *,
                  registry_options: Any = None,
                  warn: Callable[[str], None] = lambda _: None) -> ImportedCache:
    """Read every source's records. A source that cannot be read is a warning, as in
    buildx: the build goes on without it."""
    cache = ImportedCache()
    for option in options:
        try:
            if option.type == "local":
                _import_local(option, store, cache)
            else:
                _import_registry(option, store, cache, registry_options)
        except (PybuildError, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, PybuildError) else str(exc)
            warn(f"cache import from {option.where} skipped: {message}")
    return cache


def _bare_description(description: str) -> str:
    """"[app 3/5] RUN make TOKEN=…" -> "[app 3/5] RUN": step names show expanded build
    args, which stay home."""
    label, sep, instruction = description.partition("] ")
    return f"{label}{sep}{instruction.split(' ', 1)[0]}" if sep else ""


def export_records_for(cache_records: Iterable[Any]) -> list[ExportRecord]:
    """CacheStore records as exportable ones (without their key parts)."""
    return [ExportRecord(key=rec.cache_key, step=rec.step,
                         description=_bare_description(rec.description), result=rec.result)
            for rec in cache_records]

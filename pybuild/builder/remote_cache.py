"""`--cache-to` / `--cache-from`: build cache shared between machines, as buildx's `local`
and `registry` cache backends do.

The artifact's format is `cache.artifact`'s; this module moves it: it compresses the
records' layers for the trip (`layers.recompress`), writes the artifact into an OCI
layout directory (`transports`) or a registry, and reads it back. `mode=min` (the
default, as in buildx) exports the records of the steps whose layers are in the result;
`mode=max` every step of the build. Importing is lazy: the config is read at the start,
and a record's blobs are fetched only when the solver would otherwise run its step; the
record is then copied into the local cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild.cache.artifact import (
    CONFIG_MEDIA_TYPE,
    ExportRecord,
    artifact_manifest,
    decode_config,
    decode_manifest,
    encode_config,
    record_layers,
)
from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import PybuildError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.reference import Reference
from pybuild.transports.names import ImageLocation, OCILayoutLocation, RegistryLocation

if TYPE_CHECKING:
    from pybuild.registry import RegistryOptions

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
    if attrs.get("compression", "gzip") not in mt.COMPRESSIONS:
        raise UserError(f"{flag}: compression must be gzip, zstd or uncompressed")
    return CacheOption(type=kind, attrs=tuple(sorted(attrs.items())), text=text)


def cache_location(option: CacheOption, *, exporting: bool) -> ImageLocation:
    """Where the artifact of `option` lives: a layout directory (`dest=`/`src=`, the
    image named by `tag=`, default latest, or `digest=`) or a registry (`ref=`)."""
    if option.type == "registry":
        return RegistryLocation(reference=Reference.parse(option.get("ref")))
    digest = option.get("digest")
    return OCILayoutLocation(path=option.get("dest" if exporting else "src"),
                             name=None if digest else option.get("tag", "latest"),
                             digest=Digest(digest) if digest else None)


# -- export ---------------------------------------------------------------------------------


def build_cache_manifest(store: ContentStore, records: Iterable[ExportRecord],
                         compression: str, memo_path: Path | None) -> Descriptor:
    """Write the cache config and manifest into the store (layers compressed as asked);
    the manifest's descriptor."""
    from pybuild.layers.recompress import compress_layer

    records = list(records)
    packed: dict[str, Descriptor] = {}
    for rec in records:
        for layer in record_layers(rec.result):
            if layer["digest"] not in packed:
                stored = Descriptor(media_type=layer["media_type"],
                                    digest=Digest(layer["digest"]), size=int(layer["size"]))
                packed[layer["digest"]] = compress_layer(store, stored, compression, memo_path)
    config = encode_config(records, packed)
    config_desc = Descriptor(media_type=CONFIG_MEDIA_TYPE, digest=store.write(config),
                             size=len(config))
    raw = artifact_manifest(config_desc, packed.values()).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(raw), size=len(raw))


def export_cache(store: ContentStore, option: CacheOption, records: list[ExportRecord], *,
                 memo_path: Path | None,
                 registry_options: RegistryOptions | None = None) -> Descriptor:
    """Write the records to where `option` says; the cache manifest's descriptor."""
    from pybuild.transports.endpoints import write_image

    desc = build_cache_manifest(store, records, option.get("compression", "gzip"), memo_path)
    write_image(store, desc, cache_location(option, exporting=True), registry=registry_options)
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
                   for x in record_layers(record["result"])
                   if not store.has(Digest(x["digest"]))]
        if missing:
            with self._lock:  # one transfer per source at a time keeps it simple
                self._fetchers[record["source"]](missing)


def _import_local(location: OCILayoutLocation, store: ContentStore,
                  cache: ImportedCache) -> None:
    from pybuild.transports.oci_layout import LayoutDir

    layout = LayoutDir(Path(location.path))
    entry = layout.select(name=location.name, digest=location.digest)
    manifest = decode_manifest(layout.read(entry), f"{layout.where}@{entry.digest}")
    records = decode_config(layout.read(manifest.config), layout.where)

    def fetch(blobs: list[Descriptor]) -> None:
        for desc in blobs:
            layout.copy_into(store, desc)

    cache.add(f"local:{location.path}", records, fetch)


def _import_registry(location: RegistryLocation, store: ContentStore, cache: ImportedCache,
                     registry_options: RegistryOptions | None) -> None:
    from pybuild.registry import pull_blobs_sync, resolve_sync

    ref = location.reference
    desc, data = resolve_sync(ref, options=registry_options)
    manifest = decode_manifest(data, f"{ref.familiar}@{desc.digest}")
    # The config comes through the same verified blob fetch as the layers (into the store,
    # where GC drops it once nothing references it).
    pull_blobs_sync(ref, [manifest.config], store, options=registry_options)
    records = decode_config(store.read(manifest.config.digest, what="cache config"),
                            ref.familiar)
    cache.add(f"registry:{ref}", records,
              lambda blobs: pull_blobs_sync(ref, blobs, store, options=registry_options))


def import_caches(options: Iterable[CacheOption], store: ContentStore, *,
                  registry_options: RegistryOptions | None = None,
                  warn: Callable[[str], None] = lambda _: None) -> ImportedCache:
    """Read every source's records. A source that cannot be read is a warning, as in
    buildx: the build goes on without it."""
    cache = ImportedCache()
    for option in options:
        try:
            match cache_location(option, exporting=False):
                case OCILayoutLocation() as layout:
                    _import_local(layout, store, cache)
                case RegistryLocation() as remote:
                    _import_registry(remote, store, cache, registry_options)
        except (PybuildError, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, PybuildError) else str(exc)
            warn(f"cache import from {option.where} skipped: {message}")
    return cache

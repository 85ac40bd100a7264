"""Layer conversions at export time: (re)compression, and timestamps clamped to an epoch.

Builds store layers uncompressed (as Docker's and Podman's local stores do): no CPU goes
to compression while building, and the diff_id is the blob digest. Exports and pushes
compress (gzip by default, as buildx does) into new blobs; the config is unchanged (same
diff_ids), the manifest is new. A layer already compressed another way (a base image's
gzip layer) is kept unless `force` asks, as BuildKit's `force-compression` does. Results
are remembered per (diff_id, format), so exporting the same layers again costs nothing.

`rewrite-timestamp` (BuildKit >= 0.13) makes new, uncompressed layers whose mtimes are
clamped to the epoch (`layers.retime`), remembered per (diff_id, epoch) the same way;
they are compressed afterwards like any other layer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, UserError
from pybuild.layers.compress import GZIP_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL, compress_stream
from pybuild.layers.decompress import decompressed
from pybuild.layers.errors import LayerError
from pybuild.layers.retime import clamp_timestamps
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob

KINDS: tuple[mt.Compression, ...] = mt.COMPRESSIONS

# A kind's output format version: blobs memoized under an older format are not reused,
# so the same layers compress to the same bytes on every machine.
_FORMATS = {"gzip": "gzip/blocks-128k"}
_DEFAULT_LEVELS = {"gzip": GZIP_DEFAULT_LEVEL, "zstd": ZSTD_DEFAULT_LEVEL}
_DROP_STEP = 16 << 20  # read pages are dropped from the page cache in steps of this


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerCompression:
    """How exported layers are compressed: buildx's `compression`, `compression-level`
    and `force-compression`."""

    kind: mt.Compression = "gzip"
    level: int | None = None  # None: the kind's default; zstd levels as `zstd_level` maps
    force: bool = False  # also recompress layers already compressed another way

    @property
    def effective_level(self) -> int | None:
        if self.kind == "uncompressed":
            return None
        if self.level is None:
            return _DEFAULT_LEVELS[self.kind]
        return zstd_level(self.level) if self.kind == "zstd" else self.level

    @property
    def format(self) -> str:
        """What the compressed bytes depend on (the memo's key)."""
        name = _FORMATS.get(self.kind, self.kind)
        level = self.effective_level
        return name if level is None or level == _DEFAULT_LEVELS[self.kind] else (
            f"{name}/level-{level}")


def zstd_level(level: int) -> int:
    """BuildKit compresses zstd with klauspost/compress, whose four encoder speeds take
    zstd levels as `EncoderLevelFromZstd` groups them: below 3 the fastest (zstd level 1),
    3-5 the default (3), 6-9 "better" (about 7), 10 and up "best" (about 11). libzstd is
    given the level each group stands for, so a level means what it means in BuildKit."""
    if level < 3:
        return 1
    if level < 6:
        return 3
    if level < 10:
        return 7
    return 11


class Memo:
    """(diff_id, format) -> blob digest, in a small JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, str] = {}
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                self.data = json.loads(path.read_text())

    def get(self, diff_id: str, fmt: str) -> str | None:
        return self.data.get(f"{diff_id}|{fmt}")

    def put(self, diff_id: str, fmt: str, digest: str) -> None:
        self.data[f"{diff_id}|{fmt}"] = digest
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


class _DroppingReader:
    """Reads a store blob once, dropping what was read from the page cache as it goes.

    The compressed blob written meanwhile then reuses those pages (writing into pages the
    kernel has not used lately costs more than compressing, on VMs that hand free memory
    back to the host), and the big uncompressed blob does not crowd out the compressed
    one the archive copy reads next. Plain layer blobs are not kept cached when they are
    written either (FileHashWriter); a memoized layer is not read again.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._fd = f.fileno()
        self._pos = self._dropped = f.tell()

    def readinto(self, b: bytearray | memoryview) -> int:
        n: int = self._f.readinto(b)  # type: ignore[attr-defined]
        self._pos += n
        if self._pos - self._dropped >= _DROP_STEP or (not n and self._pos > self._dropped):
            with contextlib.suppress(OSError):  # only an optimisation
                os.posix_fadvise(self._fd, self._dropped, self._pos - self._dropped,
                                 os.POSIX_FADV_DONTNEED)
            self._dropped = self._pos
        return n

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(n if n >= 0 else 1 << 20)
        got = self.readinto(buf)
        return bytes(buf[:got])

    def close(self) -> None:
        self._f.close()


def _corrupt(layer: Descriptor, why: str) -> UserError:
    return UserError(f"layer {layer.digest} in the content store is corrupt ({why})",
                     code="integrity")


def _publish(store: ContentStore, kind: str,
             fill: Callable[[BinaryIO], tuple[str, int]]) -> tuple[Digest, int]:
    """Run `fill` into a temp file of the store and ingest it: (digest, size). `fill`
    returns the digest (hex) and size of what it wrote. A temp file named for this
    process: a kill leaves nothing a sweep would keep."""
    fd, tmp = store.temp_file(kind)
    try:
        with os.fdopen(fd, "w+b") as dst:
            digest_hex, size = fill(dst)
            dst.flush()
            os.fsync(dst.fileno())
        digest = store.ingest_file(tmp, Digest.from_hex(digest_hex))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return digest, size


def _stream(store: ContentStore, layer: Descriptor) -> BinaryIO:
    """The layer's uncompressed tar, read once (bounded like every decompression)."""
    f = store.open(layer.digest, what="layer")
    if mt.layer_compression(layer.media_type) == "uncompressed":
        return cast(BinaryIO, _DroppingReader(f))
    return decompressed(f, close_source=True, what=f"layer {layer.digest}")


def compress_layer(store: ContentStore, layer: Descriptor, kind: str | LayerCompression,
                   memo_path: Path | None = None, *, diff_id: Digest | None = None,
                   memo: Memo | None = None) -> Descriptor:
    """One layer compressed as asked (memoized); the result keeps the layer's media type
    family (OCI or Docker). A layer compressed another way stays as it is unless
    `force`; recompressing one needs its `diff_id` (an uncompressed layer is its own)."""
    how = kind if isinstance(kind, LayerCompression) else LayerCompression(kind=_kind(kind))
    memo = memo or Memo(memo_path)
    oci = not mt.is_docker(layer.media_type)
    current = mt.layer_compression(layer.media_type)
    if current == how.kind or (current != "uncompressed" and not how.force):
        return layer  # as BuildKit: existing blobs keep their compression without force
    if mt.is_foreign(layer.media_type, layer.urls):
        return layer
    expected = layer.digest if current == "uncompressed" else diff_id
    if expected is None:
        raise ValueError("recompressing a compressed layer needs its diff_id")
    media_type = mt.layer_type(how.kind, oci=oci)
    known = memo.get(expected, how.format)
    if known and store.has(Digest(known)):
        return Descriptor(media_type=media_type, digest=Digest(known),
                          size=store.size(Digest(known)))

    def fill(dst: BinaryIO) -> tuple[str, int]:
        try:
            with contextlib.closing(_stream(store, layer)) as src:
                # layers.compress says "none" for what the model calls "uncompressed".
                got, _, digest_hex, size = compress_stream(
                    src, dst, "none" if how.kind == "uncompressed" else how.kind,
                    level=how.effective_level)
        except LayerError as exc:
            raise _corrupt(layer, str(exc)) from None
        if "sha256:" + got != expected:
            raise _corrupt(layer, f"content hashes to sha256:{got}")
        return digest_hex, size

    digest, size = _publish(store, "recompress", fill)
    memo.put(expected, how.format, digest)
    return Descriptor(media_type=media_type, digest=digest, size=size)


def retime_layer(store: ContentStore, layer: Descriptor, diff_id: Digest, epoch: int,
                 memo_path: Path | None = None, *,
                 memo: Memo | None = None) -> tuple[Descriptor, Digest]:
    """The layer with every timestamp later than `epoch` clamped to it, as a new
    uncompressed blob (its digest is its new diff_id); the layer itself when nothing was
    later. Returns (descriptor, diff_id)."""
    memo = memo or Memo(memo_path)
    fmt = f"retime/{epoch}"
    known = memo.get(diff_id, fmt)
    oci = not mt.is_docker(layer.media_type)
    if known == str(diff_id):
        return layer, diff_id
    if known and store.has(Digest(known)):
        return Descriptor(media_type=mt.layer_type("uncompressed", oci=oci),
                          digest=Digest(known), size=store.size(Digest(known))), Digest(known)
    changed = True

    def fill(dst: BinaryIO) -> tuple[str, int]:
        nonlocal changed
        try:
            with contextlib.closing(_stream(store, layer)) as src:
                done = clamp_timestamps(src, dst, epoch)
        except LayerError as exc:
            raise _corrupt(layer, str(exc)) from None
        if "sha256:" + done.source_diff_id != diff_id:
            raise IntegrityError(f"layer {layer.digest}: its content hashes to sha256:"
                                 f"{done.source_diff_id}, the image config says {diff_id}")
        changed = done.changed
        return done.diff_id, done.size

    digest, size = _publish(store, "retime", fill)
    if not changed:  # the same tar: keep the layer as it was (and its compression);
        # the copy just written is the diff_id's blob, which a later sweep may collect
        memo.put(diff_id, fmt, str(diff_id))
        return layer, diff_id
    memo.put(diff_id, fmt, str(digest))
    return Descriptor(media_type=mt.layer_type("uncompressed", oci=oci), digest=digest,
                      size=size), digest


def _kind(kind: str) -> mt.Compression:
    for known in KINDS:
        if kind == known:
            return known
    raise UserError(f"unknown compression {kind!r}: use gzip, zstd or uncompressed")


def compress_image(store: ContentStore, desc: Descriptor, kind: str | LayerCompression,
                   memo_path: Path | None = None) -> Descriptor:
    """The same image with its layers compressed as asked; a new manifest (and index)
    when anything changed, else `desc` itself. Layer media types keep the manifest's
    family (a Docker manifest gets Docker layer types)."""
    how = kind if isinstance(kind, LayerCompression) else LayerCompression(kind=_kind(kind))
    return _convert(store, desc, how, Memo(memo_path))


def _convert(store: ContentStore, desc: Descriptor, how: LayerCompression,
             memo: Memo) -> Descriptor:
    data = store.read(desc.digest, what="manifest")
    verify_blob(data, desc, what="manifest")
    if mt.is_index(desc.media_type):
        index = Index.parse(data)
        children = tuple(_convert(store, c, how, memo) if mt.is_manifest(c.media_type)
                         or mt.is_index(c.media_type) else c for c in index.manifests)
        if children == index.manifests:
            return desc
        new = Index(media_type=index.media_type, manifests=children,
                    annotations=index.annotations)
        raw = new.encode()
        return Descriptor(media_type=desc.media_type, digest=store.write(raw), size=len(raw),
                          platform=desc.platform, annotations=desc.annotations)
    manifest = Manifest.parse(data)
    layers = compress_layers(store, manifest, how, memo=memo)
    if layers == manifest.layers:
        return desc
    raw = with_layers(manifest, layers).encode()
    return Descriptor(media_type=desc.media_type, digest=store.write(raw), size=len(raw),
                      platform=desc.platform, annotations=desc.annotations)


def compress_layers(store: ContentStore, manifest: Manifest, how: LayerCompression, *,
                    memo_path: Path | None = None,
                    memo: Memo | None = None) -> tuple[Descriptor, ...]:
    """The manifest's layers compressed as asked, typed in the manifest's family."""
    memo = memo or Memo(memo_path)
    diff_ids: tuple[Digest, ...] = ()
    if how.force and any(mt.layer_compression(x.media_type) not in ("uncompressed", how.kind)
                         for x in manifest.layers):
        diff_ids = ImageConfig.parse(store.read(manifest.config.digest, what="config")
                                     ).diff_ids
    oci = not mt.is_docker(manifest.media_type)
    out = []
    for i, layer in enumerate(manifest.layers):
        done = compress_layer(store, layer, how, diff_id=diff_ids[i] if diff_ids else None,
                              memo=memo)
        out.append(retype(done, oci=oci))
    return tuple(out)


def retype(layer: Descriptor, *, oci: bool) -> Descriptor:
    """The layer's media type in the OCI or Docker family (foreign layers stay)."""
    if mt.is_foreign(layer.media_type, layer.urls) or layer.media_type not in mt.LAYER_TYPES:
        return layer
    kind = mt.layer_compression(layer.media_type)
    media_type = mt.layer_type(kind, oci=oci)
    if media_type == layer.media_type:
        return layer
    return Descriptor(media_type=media_type, digest=layer.digest, size=layer.size,
                      platform=layer.platform, annotations=layer.annotations,
                      urls=layer.urls)


def with_layers(manifest: Manifest, layers: tuple[Descriptor, ...]) -> Manifest:
    return Manifest(media_type=manifest.media_type, config=manifest.config, layers=layers,
                    annotations=manifest.annotations, subject=manifest.subject,
                    artifact_type=manifest.artifact_type)

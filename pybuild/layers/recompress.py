"""Layer compression at export time.

Builds store layers uncompressed (as Docker's and Podman's local stores do): no CPU goes
to compression while building, and the diff_id is the blob digest. Exports and pushes
compress (gzip by default, as buildx does) into new blobs; the config is unchanged (same
diff_ids), the manifest is new. Results are remembered per (diff_id, kind), so exporting
the same layers again costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import BinaryIO

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.layers.compress import compress_stream
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob

KINDS: tuple[mt.Compression, ...] = mt.COMPRESSIONS
_OCI_TYPES: dict[mt.Compression, str] = {
    "gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "uncompressed": mt.OCI_LAYER}


# A kind's output format version: blobs memoized under an older format are not reused,
# so the same layers compress to the same bytes on every machine.
_FORMATS = {"gzip": "gzip/blocks-128k"}
_DROP_STEP = 16 << 20  # read pages are dropped from the page cache in steps of this


class _Memo:
    """(uncompressed digest, kind) -> compressed digest, in a small JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, str] = {}
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                self.data = json.loads(path.read_text())

    def _key(self, diff_id: str, kind: mt.Compression) -> str:
        return f"{diff_id}|{_FORMATS.get(kind, kind)}"

    def get(self, diff_id: str, kind: mt.Compression) -> str | None:
        return self.data.get(self._key(diff_id, kind))

    def put(self, diff_id: str, kind: mt.Compression, digest: str) -> None:
        self.data[self._key(diff_id, kind)] = digest
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


def _compress_layer(store: ContentStore, layer: Descriptor, kind: mt.Compression,
                    memo: _Memo) -> Descriptor:
    current = mt.layer_compression(layer.media_type)
    if current == kind:
        return layer
    if current != "uncompressed":
        # Already compressed another way: keep it (BuildKit does too without force).
        return layer
    known = memo.get(layer.digest, kind)
    if known and store.has(Digest(known)):
        return Descriptor(media_type=_OCI_TYPES[kind], digest=Digest(known),
                          size=store.size(Digest(known)))
    # A temp file named for this process: a kill leaves nothing a sweep would keep.
    fd, tmp = store.temp_file("recompress")
    try:
        with store.open(layer.digest, what="layer") as src, os.fdopen(fd, "wb") as dst:
            reader = _DroppingReader(src)
            # layers.compress says "none" for what the model calls "uncompressed".
            diff_id, _, digest_hex, size = compress_stream(
                reader, dst, "none" if kind == "uncompressed" else kind)  # type: ignore[arg-type]
            dst.flush()
            os.fsync(dst.fileno())
        if "sha256:" + diff_id != layer.digest:
            raise UserError(f"layer {layer.digest} in the content store is corrupt (content "
                            f"hashes to sha256:{diff_id})", code="integrity")
        digest = store.ingest_file(tmp, Digest.from_hex(digest_hex))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    memo.put(layer.digest, kind, digest)
    return Descriptor(media_type=_OCI_TYPES[kind], digest=digest, size=size)


def _kind(kind: str) -> mt.Compression:
    for known in KINDS:
        if kind == known:
            return known
    raise UserError(f"unknown compression {kind!r}: use gzip, zstd or uncompressed")


def compress_layer(store: ContentStore, layer: Descriptor, kind: str,
                   memo_path: Path | None = None) -> Descriptor:
    """One layer compressed as `kind` (memoized); a compressed layer stays as it is."""
    return _compress_layer(store, layer, _kind(kind), _Memo(memo_path))


def compress_image(store: ContentStore, desc: Descriptor, kind: str,
                   memo_path: Path | None = None) -> Descriptor:
    """The same image with its uncompressed layers compressed as `kind`; a new manifest
    (and index) when anything changed, else `desc` itself."""
    return _convert(store, desc, _kind(kind), _Memo(memo_path))


def _convert(store: ContentStore, desc: Descriptor, kind: mt.Compression,
             memo: _Memo) -> Descriptor:
    data = store.read(desc.digest, what="manifest")
    verify_blob(data, desc, what="manifest")
    if mt.is_index(desc.media_type):
        index = Index.parse(data)
        children = tuple(_convert(store, c, kind, memo) if mt.is_manifest(c.media_type)
                         or mt.is_index(c.media_type) else c for c in index.manifests)
        if children == index.manifests:
            return desc
        new = Index(media_type=index.media_type, manifests=children,
                    annotations=index.annotations)
        raw = new.encode()
        return Descriptor(media_type=desc.media_type, digest=store.write(raw), size=len(raw),
                          platform=desc.platform, annotations=desc.annotations)
    manifest = Manifest.parse(data)
    layers = tuple(_compress_layer(store, x, kind, memo) for x in manifest.layers)
    if layers == manifest.layers:
        return desc
    new_manifest = Manifest(media_type=manifest.media_type, config=manifest.config,
                            layers=layers, annotations=manifest.annotations,
                            subject=manifest.subject, artifact_type=manifest.artifact_type)
    raw = new_manifest.encode()
    return Descriptor(media_type=desc.media_type, digest=store.write(raw), size=len(raw),
                      platform=desc.platform, annotations=desc.annotations)

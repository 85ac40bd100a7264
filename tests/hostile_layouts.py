"""Craft hostile OCI image layouts for tests, byte by byte.

The tar writer here is deliberately independent of pybuild's (and of Python's tarfile,
which refuses or normalises some of what an attacker writes): every header field, PAX
record (paths, link targets, binary xattr values) and entry order is what the test says.
Layouts stack the hostile layers on the busybox test image's layer for the host's
architecture, so a `RUN` step can start FROM them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REG, LINK, SYMLINK, CHR, BLK, DIR, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_BLOCK = 512

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"

# vfs_cap_data revision 2: cap_setuid permitted + effective.
CAP_SETUID = bytes.fromhex("01000002" "80000000" "00000000" "00000000" "00000000")


@dataclass(frozen=True)
class Entry:
    name: str | bytes
    kind: bytes = REG
    data: bytes = b""
    mode: int = 0o644
    linkname: str | bytes = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    dev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    size: int | None = None  # declared size when `data` is produced elsewhere (bombs)


def d(name: str, mode: int = 0o755, mtime: int = 1_700_000_000) -> Entry:
    return Entry(name, DIR, mode=mode, mtime=mtime)


def f(name: str | bytes, data: bytes = b"", mode: int = 0o644, **kw: object) -> Entry:
    return Entry(name, REG, data=data, mode=mode, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str) -> Entry:
    return Entry(name, SYMLINK, mode=0o777, linkname=target)


def hard(name: str, target: str) -> Entry:
    return Entry(name, LINK, linkname=target)


def _b(text: str | bytes) -> bytes:
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def _header(name: bytes, kind: bytes, size: int, e: Entry, linkname: bytes) -> bytes:
    h = bytearray(_BLOCK)
    h[0:100] = name[:100].ljust(100, b"\0")
    h[100:108] = _octal(e.mode & 0o7777, 8)
    h[108:116] = _octal(e.uid, 8)
    h[116:124] = _octal(e.gid, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(e.mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157:257] = linkname[:100].ljust(100, b"\0")
    h[257:265] = b"ustar\x0000"
    h[329:337] = _octal(e.dev[0], 8)
    h[337:345] = _octal(e.dev[1], 8)
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pad(n: int) -> bytes:
    return bytes(-n % _BLOCK)


def entry_bytes(e: Entry) -> bytes:
    """One entry: a PAX header (long names, link targets, xattrs) when needed, then the
    ustar header, then the data (only regular files carry data)."""
    name, link = _b(e.name), _b(e.linkname)
    size = len(e.data) if e.size is None else e.size
    records = b""
    if len(name) > 100:
        records += _pax_record(b"path", name)
    if len(link) > 100:
        records += _pax_record(b"linkpath", link)
    for key, value in e.xattrs.items():
        records += _pax_record(b"SCHILY.xattr." + key.encode(), value)
    out = b""
    if records:
        pax = Entry("PaxHeaders/x", mode=0o644)
        out += _header(b"PaxHeaders/x", b"x", len(records), pax, b"") + records
        out += _pad(len(records))
    data_size = size if e.kind == REG else 0
    out += _header(name, e.kind, data_size, e, link)
    if e.kind == REG and e.size is None:
        out += e.data + _pad(len(e.data))
    return out


def tar(entries: Iterable[Entry]) -> bytes:
    return b"".join(entry_bytes(e) for e in entries) + bytes(2 * _BLOCK)


@dataclass(frozen=True)
class Blob:
    data: bytes
    diff_id: str  # "sha256:..." of the uncompressed tar
    media_type: str = LAYER_GZIP

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


def layer(entries: Iterable[Entry], *, compress: bool = True) -> Blob:
    raw = tar(entries)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    if not compress:
        return Blob(raw, diff_id, LAYER_TAR)
    return Blob(gzip.compress(raw, 6, mtime=0), diff_id)


def bomb(name: str, size: int) -> Blob:
    """A gzip layer holding one file of `size` zero bytes, compressed as a stream (never
    in memory): about size/1000 bytes of blob."""
    e = Entry(name, REG, size=size)
    head = entry_bytes(e)
    sha = hashlib.sha256()
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = io.BytesIO()

    def feed(chunk: bytes) -> None:
        sha.update(chunk)
        out.write(comp.compress(chunk))

    feed(head)
    zeros = bytes(1 << 20)
    left = size
    while left:
        n = min(left, len(zeros))
        feed(zeros[:n])
        left -= n
    feed(_pad(size) + bytes(2 * _BLOCK))
    out.write(comp.flush())
    return Blob(out.getvalue(), "sha256:" + sha.hexdigest())


def host_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _blob_path(layout: Path, digest: str) -> Path:
    algo, hexdigest = digest.split(":")
    return layout / "blobs" / algo / hexdigest


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _base_image(base: Path) -> tuple[dict[str, object], dict[str, object]]:
    """(manifest, config) of the busybox layout's image for this host's architecture."""
    index = json.loads((base / "index.json").read_bytes())
    top = index["manifests"][0]
    doc = json.loads(_blob_path(base, top["digest"]).read_bytes())
    if top["mediaType"] == INDEX or "manifests" in doc:
        arch = host_arch()
        (entry,) = [m for m in doc["manifests"]
                    if m.get("platform", {}).get("architecture") == arch]
        doc = json.loads(_blob_path(base, entry["digest"]).read_bytes())
    config = json.loads(_blob_path(base, doc["config"]["digest"]).read_bytes())
    return doc, config


def write_layout(
    path: Path,
    layers: list[Blob],
    *,
    base: Path | None = None,
    diff_ids: list[str] | None = None,
    ref: str = "latest",
) -> str:
    """Write an OCI layout at `path` whose one image is the base image's layers (if any)
    plus `layers`; `diff_ids` replaces the config's list (to lie). Returns the manifest
    digest."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    layer_descs: list[dict[str, object]] = []
    ids: list[str] = []
    config: dict[str, object] = {
        "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
    }
    if base is not None:
        manifest, base_config = _base_image(base)
        config = base_config
        for desc in manifest["layers"]:  # type: ignore[attr-defined]
            shutil.copyfile(_blob_path(base, desc["digest"]), blobs / desc["digest"].split(":")[1])
            layer_descs.append(desc)
        ids = list(base_config["rootfs"]["diff_ids"])  # type: ignore[index]
    for blob in layers:
        put(blob.data)
        layer_descs.append({"mediaType": blob.media_type, "digest": blob.digest,
                            "size": len(blob.data)})
        ids.append(blob.diff_id)
    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else ids}
    config.pop("history", None)
    config_data = _json(config)
    manifest_doc = {
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": put(config_data), "size": len(config_data)},
        "layers": layer_descs,
    }
    manifest_data = _json(manifest_doc)
    manifest_digest = put(manifest_data)
    index = {
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": manifest_digest,
                       "size": len(manifest_data),
                       "annotations": {"org.opencontainers.image.ref.name": ref}}],
    }
    (path / "index.json").write_bytes(_json(index))
    (path / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    return manifest_digest

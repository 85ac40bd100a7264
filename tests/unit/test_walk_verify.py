"""The one image walker (content/walk.py) and the one verifying reader (content/verify.py)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader, check_bytes
from pybuild.content.walk import reachable, walk
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ContainerConfig, History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest

# -- the verifying reader -------------------------------------------------------------

BLOB = b"some blob content" * 1000
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def _read_all(reader: VerifyingReader, chunk: int = 4096) -> bytes:
    out = bytearray()
    buf = bytearray(chunk)
    while n := reader.readinto(buf):
        out += buf[:n]
    reader.finish()
    return bytes(out)


def test_a_good_blob_passes_through() -> None:
    reader = VerifyingReader(io.BytesIO(BLOB), DIGEST, len(BLOB), where="test")
    assert _read_all(reader) == BLOB and reader.verified
    assert reader.actual_digest == DIGEST


def test_a_flipped_byte_is_a_digest_mismatch() -> None:
    bad = bytearray(BLOB)
    bad[100] ^= 1
    with pytest.raises(IntegrityError, match=f"blob {DIGEST} in the test: digest mismatch"):
        _read_all(VerifyingReader(io.BytesIO(bytes(bad)), DIGEST, len(BLOB), where="test"))


def test_a_short_blob_is_a_size_mismatch() -> None:
    with pytest.raises(IntegrityError, match=r"size mismatch .*blob has 100"):
        _read_all(VerifyingReader(io.BytesIO(BLOB[:100]), DIGEST, len(BLOB), where="test"))


class _Endless(io.RawIOBase):
    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        b[:] = b"\0" * len(b)
        self.served += len(b)
        return len(b)


def test_a_longer_blob_fails_as_the_extra_byte_arrives() -> None:
    # A hostile layout cannot make pybuild read without bound.
    endless = _Endless()
    with pytest.raises(IntegrityError, match="blob is bigger"):
        _read_all(VerifyingReader(endless, DIGEST, len(BLOB), where="test"))  # type: ignore[arg-type]
    assert endless.served <= len(BLOB) + 4096


def test_size_none_checks_the_digest_only() -> None:
    assert _read_all(VerifyingReader(io.BytesIO(BLOB), DIGEST, None, where="t")) == BLOB
    with pytest.raises(IntegrityError, match="digest mismatch"):
        _read_all(VerifyingReader(io.BytesIO(BLOB[:-1]), DIGEST, None, where="t"))


def test_drain_reads_the_rest_and_checks() -> None:
    reader = VerifyingReader(io.BytesIO(BLOB), DIGEST, len(BLOB), where="t")
    reader.readinto(bytearray(10))
    reader.drain()
    assert reader.verified and reader.read_bytes == len(BLOB)


def test_sha512_and_unknown_algorithms() -> None:
    d512 = "sha512:" + hashlib.sha512(BLOB).hexdigest()
    check_bytes(BLOB, d512, len(BLOB), where="t")
    with pytest.raises(IntegrityError, match="unsupported digest algorithm"):
        check_bytes(BLOB, "md5:" + "0" * 32, None, where="t")


# -- the walker -----------------------------------------------------------------------


def _manifest(store: ContentStore, arch: str, payload: bytes,
              extra_layers: tuple[Descriptor, ...] = ()) -> Descriptor:
    layer = store.write(payload)
    config = ImageConfig(architecture=arch, config=ContainerConfig(env=("A=1",)),
                         diff_ids=(layer,), history=(History(created_by="x"),))
    raw_config = config.encode()
    manifest = Manifest(media_type=mt.OCI_MANIFEST, config=Descriptor(
        media_type=mt.OCI_CONFIG, digest=store.write(raw_config), size=len(raw_config)),
        layers=(Descriptor(media_type=mt.OCI_LAYER, digest=layer, size=len(payload)),
                *extra_layers))
    raw = manifest.encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(raw), size=len(raw),
                      platform=config.platform)


def _index(store: ContentStore, children: tuple[Descriptor, ...]) -> Descriptor:
    raw = Index(media_type=mt.OCI_INDEX, manifests=children).encode()
    return Descriptor(media_type=mt.OCI_INDEX, digest=store.write(raw), size=len(raw))


def test_manifests_come_children_first_each_digest_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    amd = _manifest(store, "amd64", b"shared layer")
    arm = _manifest(store, "arm64", b"shared layer")  # the same layer blob
    inner = _index(store, (arm,))
    top = _index(store, (amd, inner, amd))
    parts = walk(store, top, strict=True)
    assert [d.digest for d, _ in parts.manifests] == [amd.digest, arm.digest, inner.digest,
                                                      top.digest]
    assert all(store.read(d.digest) == data for d, data in parts.manifests)
    digests = [d.digest for d in parts.in_order]
    assert len(digests) == len(set(digests))
    assert digests.index(Digest.from_bytes(b"shared layer")) < digests.index(amd.digest)
    assert parts.digests == reachable(store, [top])


def test_strict_walks_name_the_hole(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    image = _manifest(store, "amd64", b"layer")
    layer = Digest.from_bytes(b"layer")
    store.delete([layer])
    with pytest.raises(NotFoundError, match=f"blob {layer} .*referenced by manifest "
                                            f"{image.digest}"):
        walk(store, image, strict=True)
    tolerant = walk(store, image, strict=False)
    assert [d.digest for d in tolerant.missing] == [layer]
    assert layer in reachable(store, [image])


def test_foreign_layers_may_be_absent(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    foreign = Descriptor(media_type=mt.DOCKER_FOREIGN_LAYER_GZIP,
                         digest=Digest.from_bytes(b"windows base"), size=12,
                         urls=("https://example.invalid/layer",))
    image = _manifest(store, "amd64", b"layer", extra_layers=(foreign,))
    parts = walk(store, image, strict=True)
    assert parts.foreign == (foreign,)
    assert foreign.digest not in {d.digest for d in parts.in_order}


def test_strict_walks_verify_manifests(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    image = _manifest(store, "amd64", b"layer")
    lying = Descriptor(media_type=image.media_type, digest=image.digest, size=image.size + 1)
    with pytest.raises(IntegrityError, match="size mismatch"):
        walk(store, lying, strict=True)


def test_deep_indexes_do_not_recurse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)  # 1500 tiny blobs; durability aside
    store = ContentStore(tmp_path)
    desc = _manifest(store, "amd64", b"layer")
    for _ in range(1100):  # deeper than Python's recursion limit
        desc = _index(store, (desc,))
    assert len(walk(store, desc, strict=True).manifests) == 1101

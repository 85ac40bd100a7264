"""The image model (references, platforms, manifests, configs) and the two stores."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import reachable, resolve_platform
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ContainerConfig, History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference


@pytest.mark.parametrize(("text", "full", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/alpine:3", "docker.io/library/alpine:3", "alpine:3"),
    ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64,
     "ghcr.io/o/r@sha256:" + "a" * 64),
    ("localhost:5000/a/b:tag@sha256:" + "b" * 64,
     "localhost:5000/a/b:tag@sha256:" + "b" * 64, "localhost:5000/a/b:tag@sha256:" + "b" * 64),
])
def test_reference_parsing_and_normalisation(text: str, full: str, familiar: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar


@pytest.mark.parametrize("bad", ["", "Upper", "docker.io/Upper/case", "a:b:c", "x@sha256:abc",
                                 "a//b", " spaced"])
def test_bad_references_are_user_errors(bad: str) -> None:
    with pytest.raises(UserError):
        Reference.parse(bad)


def test_platform_normalisation_and_matching() -> None:
    assert str(Platform.parse("linux/aarch64")) == "linux/arm64"
    assert str(Platform.parse("linux/arm64/v8")) == "linux/arm64"
    assert str(Platform.parse("linux/arm")) == "linux/arm/v7"
    assert str(Platform.parse("linux/x86_64")) == "linux/amd64"
    arm64 = Platform.parse("linux/arm64")
    assert arm64.matches(Platform(os="linux", architecture="arm64", variant="v8"))
    assert not arm64.matches(Platform(os="linux", architecture="amd64"))
    with pytest.raises(UserError):
        Platform.parse("linux//")


def _image(store: ContentStore, arch: str, payload: bytes) -> Descriptor:
    layer = store.write(payload)
    config = ImageConfig(architecture=arch, config=ContainerConfig(env=("A=1",)),
                         diff_ids=(layer,), history=(History(created_by="x"),))
    raw_config = config.encode()
    cfg_digest = store.write(raw_config)
    manifest = Manifest(media_type=mt.OCI_MANIFEST,
                        config=Descriptor(media_type=mt.OCI_CONFIG, digest=cfg_digest,
                                          size=len(raw_config)),
                        layers=(Descriptor(media_type=mt.OCI_LAYER, digest=layer,
                                           size=len(payload)),))
    raw = manifest.encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(raw), size=len(raw),
                      platform=config.platform)


def test_canonical_encodings_round_trip(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "c")
    desc = _image(store, "amd64", b"layer")
    data = store.read(desc.digest)
    assert Manifest.parse(data).encode() == data
    cfg = ImageConfig.parse(store.read(Manifest.parse(data).config.digest))
    assert cfg.config.env == ("A=1",) and cfg.encode() == cfg.encode()
    index = Index(manifests=(desc,))
    assert Index.parse(index.encode()).manifests[0].platform == desc.platform


def test_reading_verifies_and_names_the_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "c")
    digest = store.write(b"hello")
    path = store.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(b"jello")
    with pytest.raises(IntegrityError, match=digest.hex):
        store.read(digest)
    with pytest.raises(IntegrityError, match="size mismatch"):
        verify_blob(b"hello!", Descriptor(media_type="x", digest=Digest.from_bytes(b"hello"),
                                          size=5))
    with pytest.raises(NotFoundError):
        store.read(Digest.from_bytes(b"absent"))


def test_writer_commit_is_atomic_and_checks_the_expected_digest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "c")
    with store.writer() as w:
        w.write(b"abc")
        with pytest.raises(IntegrityError):
            w.commit(Digest.from_bytes(b"xyz"))
    assert list(store.digests()) == []
    assert store.temp_files() == []  # the temp file is gone


def _write_same_blob(root: str) -> str:
    store = ContentStore(Path(root))
    return str(store.write(b"x" * 1_000_000))


def test_two_processes_writing_the_same_blob_both_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        digests = pool.map(_write_same_blob, [str(tmp_path / "c")] * 4)
    assert len(set(digests)) == 1
    ContentStore(tmp_path / "c").verify(Digest(digests[0]))


def test_image_store_survives_a_torn_write(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "c")
    images = ImageStore(tmp_path / "i")
    desc = _image(store, "amd64", b"l1")
    images.put("app:1", desc, "2026-01-01T00:00:00Z")
    # A killed writer leaves only a temp file beside the index; readers never see it.
    (tmp_path / "i" / ".images-deadbeef").write_text("{not json")
    assert images.get("app:1").descriptor.digest == desc.digest
    assert json.loads((tmp_path / "i" / "images.json").read_text())["images"]
    images.remove("app:1")
    with pytest.raises(NotFoundError, match="app:1"):
        images.get("app:1")


def test_platform_resolution_in_an_index(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "c")
    amd, arm = _image(store, "amd64", b"a"), _image(store, "arm64", b"b")
    raw = Index(manifests=(amd, arm)).encode()
    idx = Descriptor(media_type=mt.OCI_INDEX, digest=store.write(raw), size=len(raw))
    assert resolve_platform(store, idx, Platform.parse("linux/arm64")).digest == arm.digest
    with pytest.raises(NotFoundError, match="it has: linux/amd64, linux/arm64"):
        resolve_platform(store, idx, Platform.parse("linux/s390x"))
    assert {amd.digest, arm.digest} <= reachable(store, [idx])


def test_gc_keeps_what_images_reach_and_removes_the_rest(tmp_path: Path) -> None:
    import asyncio

    from pybuild.gc import PrunePolicy, prune
    from pybuild.root import Root

    stores = Root(tmp_path)
    kept = _image(stores.content, "amd64", b"kept-layer")
    stores.images.put("keep:1", kept, "now")
    orphan = stores.content.write(b"orphan-layer")
    report = asyncio.run(prune(stores, PrunePolicy(keep_storage=10**12)))
    assert report.blobs_removed == 1 and not stores.content.has(orphan)
    assert all(stores.content.has(d) for d in reachable(stores.content, [kept]))

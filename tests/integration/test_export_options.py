"""The image conversion every image output shares (`exporters.convert`): media types,
recompression, compression levels, annotations and `rewrite-timestamp`, on images made in
a store from the busybox base plus a layer of "our own". Every result is checked by
`pybuild.oci.validate` and read back by an independent tool: skopeo and umoci for OCI
media types, skopeo's docker-archive reader for Docker ones (skopeo 1.9's `oci:` and umoci
read OCI manifests only)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_config, read_index, read_manifest
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, UserError
from pybuild.exporters.base import Annotation, ImageOptions
from pybuild.exporters.convert import BuildFacts, Conversion, conversion, convert_image
from pybuild.layers.recompress import LayerCompression, compress_image
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import History
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform
from pybuild.oci.validate import validate_image
from pybuild.testimages.busybox import import_into_store
from pybuild.transports.docker_archive import write_docker_archive
from pybuild.transports.oci_layout import write_layout
from tests.integration.conftest import tool

EPOCH = 100_000_000  # 1973: before every file of the busybox base (2000) and of our layer
LATE = 2_000_000_000  # our layer's files: 2033
AMD64 = Platform(os="linux", architecture="amd64")
ARM64 = Platform(os="linux", architecture="arm64")


def _own_layer(store: ContentStore, tag: str) -> tuple[Descriptor, Digest]:
    """An uncompressed layer, as builds store them, with files dated LATE."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("app")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, LATE
        tar.addfile(d)
        for name, data in ((f"app/{tag}", tag.encode() * 4000), ("app/old", b"old")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            info.mtime = LATE if name != "app/old" else 1000
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    digest = store.write(data)
    return Descriptor(media_type=mt.OCI_LAYER, digest=digest, size=len(data)), digest


def _built(store: ContentStore, base: Descriptor, tag: str) -> Descriptor:
    """`base` plus one layer of our own, as `builder.image.assemble` writes it."""
    manifest = read_manifest(store, base)
    config = read_config(store, manifest)
    layer, diff_id = _own_layer(store, tag)
    new = config.replace(diff_ids=(*config.diff_ids, diff_id), history=(
        *config.history, History(created="2033-05-18T03:33:20Z", created_by="COPY app /app",
                                 comment="buildkit.dockerfile.v0")))
    raw_config = new.encode()
    image = Manifest(media_type=mt.OCI_MANIFEST, config=Descriptor(
        media_type=mt.OCI_CONFIG, digest=store.write(raw_config), size=len(raw_config)),
        layers=(*manifest.layers, layer)).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(image), size=len(image),
                      platform=new.platform)


@pytest.fixture(scope="module")
def world(base_layout: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[ContentStore, Descriptor, Descriptor, dict[str, tuple[Digest, ...]]]:
    """(store, amd64 image, two-platform index, base diff_ids per platform)."""
    root = tmp_path_factory.mktemp("convert")
    store = ContentStore(root / "content")
    index = import_into_store(store, ImageStore(root / "images"), base_layout)
    bases = {p.architecture: d for d, p in platforms_of(store, index)}
    amd = _built(store, bases["amd64"], "amd64")
    arm = _built(store, bases["arm64"], "arm64")
    raw = Index(manifests=(amd, arm)).encode()
    multi = Descriptor(media_type=mt.OCI_INDEX, digest=store.write(raw), size=len(raw))
    base_ids = {str(p): read_config(store, read_manifest(store, d)).diff_ids
                for d, p in platforms_of(store, index)}
    return store, amd, multi, base_ids


def _skopeo(*args: str) -> bytes:
    return subprocess.run([tool("skopeo"), *args], capture_output=True, check=True).stdout


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layout(store: ContentStore, image: Descriptor, dest: Path, name: str = "t") -> Path:
    write_layout(store, image, dest, names=(name,))
    return dest


def _umoci(layout: Path, name: str, bundle: Path) -> Path:
    subprocess.run([tool("umoci"), "unpack", "--image", f"{layout}:{name}", str(bundle)],
                   check=True, capture_output=True)
    return bundle / "rootfs"


def _layer_types(store: ContentStore, image: Descriptor) -> set[str]:
    return {x.media_type for x in read_manifest(store, image).layers}


# -- media types -------------------------------------------------------------------------------


def test_docker_media_types_from_top_to_bottom(world: tuple, tmp_path: Path) -> None:
    store, amd, _, _ = world
    docker = convert_image(store, amd, Conversion(compression=LayerCompression(kind="gzip"),
                                                  oci=False))
    manifest = read_manifest(store, docker)
    assert docker.media_type == manifest.media_type == mt.DOCKER_MANIFEST
    assert manifest.config.media_type == mt.DOCKER_CONFIG
    assert _layer_types(store, docker) == {mt.DOCKER_LAYER_GZIP}
    # same config blob (the image ID) in both families
    assert manifest.config.digest == read_manifest(store, amd).config.digest
    assert validate_image(store, docker) == [str(docker.digest)]
    archive = tmp_path / "d.tar"
    write_docker_archive(store, docker, archive, repo_tags=["d:1"])
    assert _sha(_skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}")) == str(
        manifest.config.digest)
    # and back: OCI again, the very same manifest as converting the original
    oci = convert_image(store, docker, Conversion(oci=True))
    assert oci == convert_image(store, amd, Conversion(compression=LayerCompression(
        kind="gzip")))
    assert _layer_types(store, oci) == {mt.OCI_LAYER_GZIP}


def test_recompressing_a_docker_manifest_keeps_docker_types(world: tuple,
                                                             tmp_path: Path) -> None:
    store, amd, _, _ = world
    plain_docker = convert_image(store, amd, Conversion(oci=False))  # layers as stored
    assert mt.DOCKER_LAYER in _layer_types(store, plain_docker)
    packed = compress_image(store, plain_docker, "zstd")
    assert packed.media_type == mt.DOCKER_MANIFEST
    assert _layer_types(store, packed) == {mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_ZSTD}
    validate_image(store, packed)
    archive = tmp_path / "z.tar"
    write_docker_archive(store, packed, archive, repo_tags=["z:1"])
    info = json.loads(_skopeo("inspect", f"docker-archive:{archive}"))
    assert info["Layers"] == [str(d) for d in read_config(store, read_manifest(
        store, amd)).diff_ids]
    # the mix this used to make (a Docker manifest naming OCI layers) is refused
    mixed = Manifest(media_type=mt.DOCKER_MANIFEST, config=read_manifest(store, packed).config,
                     layers=read_manifest(store, amd).layers).encode()
    bad = Descriptor(media_type=mt.DOCKER_MANIFEST, digest=store.write(mixed), size=len(mixed))
    with pytest.raises(IntegrityError, match=r"a Docker manifest with (config type|layer)"):
        validate_image(store, bad)


def test_an_unchanged_image_keeps_its_digest(world: tuple) -> None:
    store, amd, multi, _ = world
    assert convert_image(store, amd, Conversion()) == amd
    assert convert_image(store, multi, Conversion()) == multi
    gz = convert_image(store, amd, Conversion(compression=LayerCompression(kind="gzip")))
    assert convert_image(store, gz, Conversion(compression=LayerCompression(kind="gzip"))) == gz


# -- compression -------------------------------------------------------------------------------


def test_force_compression_recompresses_the_base_too(world: tuple, tmp_path: Path) -> None:
    store, amd, _, _ = world
    base_layer = read_manifest(store, amd).layers[0]
    assert base_layer.media_type == mt.OCI_LAYER_GZIP
    kept = convert_image(store, amd, Conversion(compression=LayerCompression(kind="zstd")))
    assert read_manifest(store, kept).layers[0] == base_layer  # BuildKit: kept without force
    forced = convert_image(store, amd, Conversion(compression=LayerCompression(
        kind="zstd", force=True)))
    layers = read_manifest(store, forced).layers
    assert {x.media_type for x in layers} == {mt.OCI_LAYER_ZSTD}
    assert layers[0].digest != base_layer.digest
    validate_image(store, forced)
    # umoci 0.4 reads no zstd: skopeo decompresses every layer, and each one is its diff_id
    out = tmp_path / "dir"
    _skopeo("copy", "--dest-decompress", f"oci:{_layout(store, forced, tmp_path / 'l')}:t",
            f"dir:{out}")
    copied = json.loads((out / "manifest.json").read_text())
    assert [x["digest"] for x in copied["layers"]] == [
        str(d) for d in read_config(store, read_manifest(store, forced)).diff_ids]
    # and the other way: a forced "uncompressed" unpacks the base's gzip
    plain = convert_image(store, amd, Conversion(compression=LayerCompression(
        kind="uncompressed", force=True)))
    assert {x.media_type for x in read_manifest(store, plain).layers} == {mt.OCI_LAYER}
    assert [x.digest for x in read_manifest(store, plain).layers] == list(
        read_config(store, read_manifest(store, amd)).diff_ids)


def test_compression_levels_as_buildkit_takes_them(world: tuple) -> None:
    store, amd, _, _ = world

    def own(kind: mt.Compression, level: int | None) -> Descriptor:
        image = convert_image(store, amd, Conversion(compression=LayerCompression(
            kind=kind, level=level)))
        return read_manifest(store, image).layers[-1]

    fast, best = own("gzip", 1), own("gzip", 9)
    assert fast.digest != best.digest and best.size <= fast.size
    assert own("gzip", None) == own("gzip", 6)  # gzip's default level
    # zstd: BuildKit's encoder (klauspost) groups levels: <3, 3-5, 6-9, 10+
    assert own("zstd", 3) == own("zstd", 5) == own("zstd", None)
    assert own("zstd", 0) == own("zstd", 2) != own("zstd", 3)
    assert own("zstd", 10) == own("zstd", 22) != own("zstd", 9)


@pytest.mark.parametrize(("options", "message"), [
    (ImageOptions(compression="gzip", compression_level=10), "gzip takes 0 to 9"),
    (ImageOptions(compression="zstd", compression_level=23), "zstd takes 0 to 22"),
    (ImageOptions(compression="uncompressed", compression_level=3), "nothing to compress"),
])
def test_bad_levels_name_the_option(options: ImageOptions, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        conversion(options, output="type=oci", default_oci=True, default_compression="gzip")
    assert "type=oci: compression-level=" in str(info.value)


# -- annotations -------------------------------------------------------------------------------


def test_annotations_go_where_buildx_writes_them(world: tuple, tmp_path: Path) -> None:
    store, _, multi, _ = world
    notes = (Annotation(level="manifest", key="all", value="1"),
             Annotation(level="manifest", key="arch", value="arm", platform=ARM64),
             Annotation(level="manifest-descriptor", key="d", value="amd", platform=AMD64),
             Annotation(level="index", key="i", value="idx"),
             Annotation(level="index-descriptor", key="top", value="yes"))
    image = convert_image(store, multi, Conversion(annotations=notes))
    assert image.annotations == (("top", "yes"),)
    index = read_index(store, image)
    assert index.annotations == (("i", "idx"),)
    amd, arm = index.manifests
    assert amd.annotations == (("d", "amd"),) and not arm.annotations
    assert dict(read_manifest(store, amd).annotations) == {"all": "1"}
    assert dict(read_manifest(store, arm).annotations) == {"all": "1", "arch": "arm"}
    validate_image(store, image)
    layout = _layout(store, image, tmp_path / "l", "multi")
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert entry["annotations"]["top"] == "yes"  # the index-descriptor: in index.json
    raw = json.loads(_skopeo("inspect", "--raw", f"oci:{layout}:multi"))
    assert raw["annotations"] == {"i": "idx"}
    assert raw["manifests"][0]["annotations"] == {"d": "amd"}
    # a Docker manifest list of the same image refuses what it has no place for
    with pytest.raises(UserError, match="oci-mediatypes=false"):
        convert_image(store, multi, Conversion(oci=False, annotations=notes))


def test_single_platform_annotations(world: tuple, tmp_path: Path) -> None:
    store, amd, _, _ = world
    notes = (Annotation(level="manifest", key="m", value="1", platform=AMD64),
             Annotation(level="manifest-descriptor", key="d", value="2"))
    image = convert_image(store, amd, Conversion(annotations=notes))
    assert image.annotations == (("d", "2"),)
    assert read_manifest(store, image).annotations == (("m", "1"),)
    layout = _layout(store, image, tmp_path / "l")
    assert json.loads((layout / "index.json").read_text())["manifests"][0][
        "annotations"]["d"] == "2"
    assert json.loads(_skopeo("inspect", "--raw", f"oci:{layout}:t"))["annotations"] == {
        "m": "1"}
    rootfs = _umoci(layout, "t", tmp_path / "b")
    assert (rootfs / "app" / "amd64").is_file()
    # Docker types take manifest annotations (BuildKit writes them), not descriptor ones
    docker = convert_image(store, amd, Conversion(oci=False, annotations=notes[:1]))
    assert read_manifest(store, docker).annotations == (("m", "1"),)
    with pytest.raises(UserError, match="manifest-descriptor annotations with oci-mediatypes"):
        convert_image(store, amd, Conversion(oci=False, annotations=notes))
    with pytest.raises(UserError, match="single platform export"):
        convert_image(store, amd, Conversion(annotations=(
            Annotation(level="index", key="i", value="x"),)))
    with pytest.raises(UserError, match="has no platform linux/arm64"):
        convert_image(store, amd, Conversion(annotations=(
            Annotation(level="manifest", key="m", value="x", platform=ARM64),)))


# -- rewrite-timestamp -------------------------------------------------------------------------


def _mtimes(store: ContentStore, layer: Descriptor) -> dict[str, int]:
    from pybuild.layers.decompress import decompressed

    with store.open(layer.digest) as f, tarfile.open(
            fileobj=decompressed(f), mode="r|") as tar:  # type: ignore[arg-type]
        return {m.name: int(m.mtime) for m in tar}


def test_rewrite_timestamp_clamps_our_layers_and_keeps_the_base(
        world: tuple, tmp_path: Path) -> None:
    store, amd, multi, base_ids = world
    facts = BuildFacts(epoch=EPOCH, base_diff_ids=base_ids)
    conv = Conversion(compression=LayerCompression(kind="gzip"), rewrite_timestamp=True)
    image = convert_image(store, amd, conv, facts=facts, memo_path=tmp_path / "memo.json")
    before, after = read_manifest(store, amd), read_manifest(store, image)
    gz_before = read_manifest(store, convert_image(store, amd, Conversion(
        compression=LayerCompression(kind="gzip"))))
    assert after.layers[0] == before.layers[0]  # the base's layer, untouched (BuildKit #4614)
    assert after.layers[1].digest != gz_before.layers[1].digest
    assert _mtimes(store, after.layers[1]) == {"app": EPOCH, "app/amd64": EPOCH,
                                               "app/old": 1000}
    config = read_config(store, after)
    assert config.diff_ids[0] == read_config(store, before).diff_ids[0]
    assert config.diff_ids[1] != read_config(store, before).diff_ids[1]
    assert config.history == read_config(store, before).history
    validate_image(store, image)
    rootfs = _umoci(_layout(store, image, tmp_path / "l"), "t", tmp_path / "b")
    assert os.stat(rootfs / "app" / "amd64").st_mtime == EPOCH
    assert os.stat(rootfs / "bin" / "busybox").st_mtime > EPOCH  # the base keeps its times
    # the same bytes again, in another store, without the memo
    other = ContentStore(tmp_path / "other")
    for d in store.digests():
        other.write(store.read(d))
    again = convert_image(other, amd, conv, facts=facts)
    assert again == image
    # without the base's diff_ids every layer is "ours": the base is rewritten too
    everything = convert_image(store, amd, conv, facts=BuildFacts(epoch=EPOCH))
    assert read_manifest(store, everything).layers[0] != before.layers[0]
    # an index: each platform against its own base
    both = convert_image(store, multi, conv, facts=facts)
    for child in read_index(store, both).manifests:
        layers = read_manifest(store, child).layers
        base = read_manifest(store, next(d for d in read_index(store, multi).manifests
                                         if d.platform == child.platform)).layers
        assert layers[0] == base[0] and layers[1] != base[1]
    validate_image(store, both)


def test_rewrite_timestamp_needs_an_epoch(world: tuple) -> None:
    store, amd, _, _ = world
    with pytest.raises(UserError, match="rewrite-timestamp=true needs SOURCE_DATE_EPOCH"):
        convert_image(store, amd, Conversion(rewrite_timestamp=True), output="type=oci")

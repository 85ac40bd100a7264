"""Exporters: OCI layouts (dir and tar), docker archives, local dirs and rootfs tars.

Every written image is read back by pybuild and by an independent tool (skopeo, podman);
corrupt blobs, in a layout being imported or in the store being exported, are errors
that name the blob.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_manifest, walk
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.exporters.base import Exporter
from pybuild.exporters.docker_archive import DockerArchiveExporter
from pybuild.exporters.local import LocalExporter, TarExporter, write_local, write_rootfs_tar
from pybuild.exporters.oci_layout import OCILayoutExporter
from pybuild.layers.compress import CompressingWriter
from pybuild.layers.tarwriter import LayerWriter
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ContainerConfig, ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform
from pybuild.testimages.busybox import PASSWD, build_busybox_layout, import_into_store
from pybuild.transports.destination import Dest
from pybuild.transports.docker_archive import write_docker_archive
from pybuild.transports.oci_archive import write_oci_archive
from pybuild.transports.oci_layout import read_oci_layout, write_layout
from tests.tooling import require, require_tool

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "testdata" / "generated" / "busybox"
AMD64 = Platform(os="linux", architecture="amd64")
ARM64 = Platform(os="linux", architecture="arm64")


@pytest.fixture(scope="module")
def layout() -> Path:
    return build_busybox_layout(BASE)


@pytest.fixture(scope="module")
def store(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> ContentStore:
    root = tmp_path_factory.mktemp("exporters")
    content = ContentStore(root / "content")
    import_into_store(content, ImageStore(root / "images"), layout)
    return content


@pytest.fixture(scope="module")
def image(store: ContentStore, layout: Path) -> Descriptor:
    (entry,) = Index.parse((layout / "index.json").read_bytes()).manifests
    return Descriptor(media_type=entry.media_type, digest=entry.digest, size=entry.size)


def _manifest_for(store: ContentStore, image: Descriptor, arch: str) -> Descriptor:
    (desc,) = [d for d, p in platforms_of(store, image) if p.architecture == arch]
    return desc


def _fresh(tmp_path: Path, name: str = "fresh") -> ContentStore:
    return ContentStore(tmp_path / name)


def _skopeo(*args: str) -> bytes:
    return subprocess.run([require_tool("skopeo"), *args], capture_output=True,
                          check=True).stdout


def image_blobs(store: ContentStore, image: Descriptor) -> list[Descriptor]:
    return list(walk(store, image, strict=True).in_order)


def write_oci_layout(store: ContentStore, image: Descriptor, dest: Dest, *, tar: bool,
                     ref_name: str | None) -> Descriptor:
    names = (ref_name,) if ref_name else ()
    if tar:
        return write_oci_archive(store, image, dest, names=names)
    assert isinstance(dest, Path)
    return write_layout(store, image, dest, names=names)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- OCI layout ----------------------------------------------------------------------------


def test_oci_dir_roundtrip(store: ContentStore, image: Descriptor, tmp_path: Path) -> None:
    out = tmp_path / "layout"
    entry = write_oci_layout(store, image, out, tar=False, ref_name="busybox:latest")
    assert entry.digest == image.digest
    assert entry.annotation("org.opencontainers.image.ref.name") == "latest"
    assert entry.annotation("io.containerd.image.name") == "docker.io/library/busybox:latest"
    written = {p.name for p in (out / "blobs" / "sha256").iterdir()}
    assert written == {d.digest.hex for d in image_blobs(store, image)}  # both platforms
    assert _sha(_skopeo("inspect", "--raw", f"oci:{out}:latest")) == image.digest

    fresh = _fresh(tmp_path)
    got = read_oci_layout(out, fresh, "latest")
    assert got == image
    assert {d.digest for d in image_blobs(fresh, got)} == {
        d.digest for d in image_blobs(store, image)
    }
    # The full image name finds it too.
    assert read_oci_layout(out, _fresh(tmp_path, "f2"), "busybox:latest") == image


def test_oci_tar_is_deterministic_and_valid(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    write_oci_layout(store, image, first, tar=True, ref_name="busybox:latest")
    write_oci_layout(store, image, second, tar=True, ref_name="busybox:latest")
    data = first.read_bytes()
    assert data == second.read_bytes()
    stream = io.BytesIO()
    write_oci_layout(store, image, stream, tar=True, ref_name="busybox:latest")
    assert stream.getvalue() == data  # stdout gets the same bytes as a file

    with tarfile.open(first) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    assert all(m.mtime == 0 and m.uid == m.gid == 0 and not m.uname for m in members)
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind

    assert _sha(_skopeo("inspect", "--raw", f"oci-archive:{first}:latest")) == image.digest
    arm = json.loads(_skopeo("inspect", "--override-os", "linux", "--override-arch", "arm64",
                             f"oci-archive:{first}:latest"))
    arm_manifest = read_manifest(store, _manifest_for(store, image, "arm64"))
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == [str(arm_manifest.layers[0].digest)]

    assert read_oci_layout(first, _fresh(tmp_path), None) == image


def test_layout_dir_adds_images_and_moves_names(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    out = tmp_path / "layout"
    amd = _manifest_for(store, image, "amd64")
    arm = _manifest_for(store, image, "arm64")
    write_oci_layout(store, amd, out, tar=False, ref_name="one")
    write_oci_layout(store, amd, out, tar=False, ref_name="two")
    write_oci_layout(store, arm, out, tar=False, ref_name="one")  # "one" moves to arm64
    index = Index.parse((out / "index.json").read_bytes())
    named = [(m.annotation("org.opencontainers.image.ref.name"), m.digest)
             for m in index.manifests]
    assert named == [("two", amd.digest), ("one", arm.digest)]

    with pytest.raises(UserError, match="choose one by name"):
        read_oci_layout(out, _fresh(tmp_path), None)
    with pytest.raises(NotFoundError) as info:
        read_oci_layout(out, _fresh(tmp_path), "three")
    assert info.value.hint == "available: one, two"
    assert read_oci_layout(out, _fresh(tmp_path), "two").digest == amd.digest


def test_refuses_to_write_into_a_non_layout_dir(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an OCI layout"):
        write_oci_layout(store, image, tmp_path, tar=False, ref_name=None)
    with pytest.raises(UserError, match="is a directory"):
        write_oci_layout(store, image, tmp_path, tar=True, ref_name=None)


def _flip_byte(path: Path, offset: int) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_blob_in_layout_is_named(
    store: ContentStore, image: Descriptor, layout: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(layout, copy)
    layer = read_manifest(store, _manifest_for(store, image, "arm64")).layers[0]
    blob = copy / "blobs" / "sha256" / layer.digest.hex
    _flip_byte(blob, layer.size // 2)
    fresh = _fresh(tmp_path)
    with pytest.raises(IntegrityError) as info:
        read_oci_layout(copy, fresh, "latest")
    assert str(layer.digest) in str(info.value) and "digest mismatch" in str(info.value)
    assert not fresh.has(layer.digest)  # nothing corrupt was published
    assert not fresh.has(image.digest)  # nor the index that would point at it

    with open(blob, "r+b") as f:
        f.truncate(layer.size - 1)
    with pytest.raises(IntegrityError, match="size mismatch") as info:
        read_oci_layout(copy, _fresh(tmp_path, "f2"), "latest")
    assert str(layer.digest) in str(info.value)

    blob.unlink()
    with pytest.raises(NotFoundError, match=f"lacks blob {layer.digest}"):
        read_oci_layout(copy, _fresh(tmp_path, "f3"), "latest")


def test_corrupt_blob_in_layout_tar_is_named(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    archive = tmp_path / "image.tar"
    write_oci_layout(store, image, archive, tar=True, ref_name="latest")
    config = read_manifest(store, _manifest_for(store, image, "amd64")).config
    with tarfile.open(archive) as tar:
        offset = tar.getmember(f"blobs/sha256/{config.digest.hex}").offset_data
    _flip_byte(archive, offset + 3)
    with pytest.raises(IntegrityError) as info:
        read_oci_layout(archive, _fresh(tmp_path), None)
    assert str(config.digest) in str(info.value) and str(archive) in str(info.value)


def test_corrupt_store_blob_is_not_exported(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    damaged = _fresh(tmp_path, "damaged")
    for d in image_blobs(store, image):
        shutil.copy(store.blob_path(d.digest), damaged.blob_path(d.digest))
    layer = read_manifest(store, _manifest_for(store, image, "amd64")).layers[0]
    _flip_byte(damaged.blob_path(layer.digest), 100)
    dest = tmp_path / "out.tar"
    with pytest.raises(IntegrityError, match=str(layer.digest)):
        write_oci_layout(damaged, image, dest, tar=True, ref_name=None)
    assert not dest.exists() and not list(tmp_path.glob(".out.tar.*"))
    with pytest.raises(IntegrityError, match=str(layer.digest)):
        write_oci_layout(damaged, image, tmp_path / "dir", tar=False, ref_name=None)
    assert not (tmp_path / "dir" / "index.json").exists()


# -- docker archive -------------------------------------------------------------------------


def test_docker_archive_needs_a_platform_for_an_index(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    with pytest.raises(UserError) as info:
        write_docker_archive(store, image, tmp_path / "x.tar", repo_tags=["a:b"])
    assert info.value.code == "multi-platform"
    assert "linux/amd64" in str(info.value) and "linux/arm64/v8" in str(info.value)
    with pytest.raises(UserError, match="by tag, not by digest"):
        write_docker_archive(store, image, tmp_path / "x.tar", platform=AMD64,
                             repo_tags=[f"a@{image.digest}"])
    assert not (tmp_path / "x.tar").exists()


def _docker_archive(store: ContentStore, image: Descriptor, dest: Path, tag: str,
                    platform: Platform) -> Descriptor:
    return write_docker_archive(store, image, dest, repo_tags=[tag], platform=platform)


def test_docker_archive_format(store: ContentStore, image: Descriptor, tmp_path: Path) -> None:
    dest = tmp_path / "docker.tar"
    tag = "localhost/pybuild-test/busybox:amd64"
    desc = _docker_archive(store, image, dest, tag, AMD64)
    assert desc.digest == _manifest_for(store, image, "amd64").digest
    manifest = read_manifest(store, desc)
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        docker_manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layer_file = tar.extractfile(f"blobs/sha256/{manifest.layers[0].digest.hex}")
        assert layer_file is not None
        assert layer_file.read(2) == b"\x1f\x8b"  # the layer as stored: gzip, as Docker 25+
    assert names == sorted(names)
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert docker_manifest == [{
        "Config": f"blobs/sha256/{manifest.config.digest.hex}",
        "RepoTags": [tag],
        "Layers": [f"blobs/sha256/{manifest.layers[0].digest.hex}"],
    }]
    # Also an OCI layout, with the image named the way Docker names it.
    assert read_oci_layout(dest, _fresh(tmp_path), tag).digest == desc.digest
    assert read_oci_layout(dest, _fresh(tmp_path, "f2"), "amd64").digest == desc.digest
    # Docker Hub names are written in their familiar form.
    hub = tmp_path / "hub.tar"
    _docker_archive(store, image, hub, "docker.io/library/busybox:1", AMD64)
    with tarfile.open(hub) as tar:
        assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == [  # type: ignore[union-attr]
            "busybox:1"
        ]

    info = json.loads(_skopeo("inspect", f"docker-archive:{dest}"))
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    config = json.loads(store.read(manifest.config.digest))
    # skopeo rebuilds a schema-2 manifest from the archive: its layers are the diff_ids.
    assert info["Layers"] == config["rootfs"]["diff_ids"]
    raw_config = _skopeo("inspect", "--config", "--raw", f"docker-archive:{dest}")
    assert _sha(raw_config) == manifest.config.digest


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    podman = require_tool("podman")
    base = [podman, "--cgroup-manager=cgroupfs", "--events-backend=file"]
    # crun refuses hybrid cgroup hosts (runtime-facts §1); runc runs everywhere.
    if shutil.which("runc"):
        base += ["--runtime", "runc"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_podman_loads_and_runs_docker_archive(
    store: ContentStore, image: Descriptor, tmp_path: Path, arch: str
) -> None:
    require_tool("podman")
    if arch == "arm64":
        require("qemu-aarch64")
    tag = f"localhost/pybuild-test/busybox:{arch}-{uuid.uuid4().hex[:8]}"
    dest = tmp_path / "docker.tar"
    _docker_archive(store, image, dest, tag, Platform(os="linux", architecture=arch))
    loaded = _podman("load", "-i", str(dest))
    assert loaded.returncode == 0, loaded.stderr
    try:
        assert tag in loaded.stdout
        run = _podman("run", "--rm", "--pull", "never", "--network", "none", "--arch", arch,
                      "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000",
                      tag, "sh", "-c", "echo ok; uname -m")
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["ok", {"amd64": "x86_64", "arm64": "aarch64"}[arch]]
    finally:
        removed = _podman("rmi", "--force", tag)
        assert removed.returncode == 0, removed.stderr


# -- local and tar ---------------------------------------------------------------------------


def test_local_single_platform(store: ContentStore, image: Descriptor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert write_local(store, image, out, platform=AMD64) == [out]
    assert stat.S_IMODE((out / "tmp").lstat().st_mode) == 0o1777
    assert os.readlink(out / "bin" / "sh") == "busybox"
    assert (out / "etc" / "passwd").read_text() == PASSWD
    st = (out / "bin" / "busybox").lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    with open(out / "bin" / "busybox", "rb") as f:
        assert f.read(20)[18] == 0x3E  # x86-64


def test_local_splits_platforms(store: ContentStore, image: Descriptor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert write_local(store, image, out) == [out / "linux_amd64", out / "linux_arm64"]
    for sub, machine in (("linux_amd64", 0x3E), ("linux_arm64", 0xB7)):
        with open(out / sub / "bin" / "busybox", "rb") as f:
            assert f.read(20)[18] == machine
    with pytest.raises(UserError, match="cannot share one"):
        write_local(store, image, tmp_path / "x", platform_split=False)
    one = write_local(store, image, tmp_path / "y", platform=ARM64, platform_split=True)
    assert one == [tmp_path / "y" / "linux_arm64"]


def _layer(
    store: ContentStore, fill: Callable[[LayerWriter], None]
) -> tuple[Descriptor, Digest]:
    buf = io.BytesIO()
    sink = CompressingWriter(buf, "gzip")
    writer = LayerWriter(sink, mtime=1000)  # type: ignore[arg-type]
    fill(writer)
    writer.close()
    result = sink.result()
    data = buf.getvalue()
    return (
        Descriptor(media_type=mt.OCI_LAYER_GZIP, digest=store.write(data), size=len(data)),
        result.diff_id,
    )


def _image(store: ContentStore, fills: list[Callable[[LayerWriter], None]]) -> Descriptor:
    layers = [_layer(store, f) for f in fills]
    config = ImageConfig(architecture="amd64", config=ContainerConfig(cmd=("sh",)),
                         diff_ids=tuple(d for _, d in layers)).encode()
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(media_type=mt.OCI_CONFIG, digest=store.write(config),
                          size=len(config)),
        layers=tuple(d for d, _ in layers),
    ).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(manifest),
                      size=len(manifest))


def _two_layers(w: LayerWriter, top: bool) -> None:
    if not top:
        w.add_dir("a", mtime=1000)
        w.add_bytes("a/gone", b"old", mtime=1000)
        w.add_bytes("a/keep", b"keep", mtime=1000)
        w.add_dir("d", mtime=1000)
        w.add_bytes("d/hidden", b"x", mtime=1000)
    else:
        w.add_whiteout("a/gone")
        w.add_dir("d", mode=0o750, mtime=1000)
        w.add_opaque("d")
        w.add_bytes("d/new", b"y", mode=0o600, mtime=1000)


def test_local_honours_whiteouts(tmp_path: Path) -> None:
    store = _fresh(tmp_path, "store")
    desc = _image(store, [lambda w: _two_layers(w, False), lambda w: _two_layers(w, True)])
    out = tmp_path / "out"
    write_local(store, desc, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a", "a/keep", "d", "d/new"
    ]
    assert stat.S_IMODE((out / "d").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "d" / "new").stat().st_mode) == 0o600

    tar_path = tmp_path / "rootfs.tar"
    write_rootfs_tar(store, desc, tar_path)
    with tarfile.open(tar_path) as tar:
        assert tar.getnames() == ["a", "a/keep", "d", "d/new"]
        assert tar.extractfile("a/keep").read() == b"keep"  # type: ignore[union-attr]
    again = tmp_path / "again.tar"
    write_rootfs_tar(store, desc, again)
    assert again.read_bytes() == tar_path.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pybuild-rootfs-")]


@pytest.mark.parametrize("where", ["gzip-mtime", "deflate-data", "gzip-crc"])
def test_local_rejects_a_corrupt_layer(tmp_path: Path, where: str) -> None:
    store = _fresh(tmp_path, "store")
    desc = _image(store, [lambda w: _two_layers(w, False)])
    layer = read_manifest(store, desc).layers[0]
    # A damaged gzip mtime still decompresses: only the digest check can catch it. Damaged
    # deflate data or CRC fail in decompression or in the digest check, whichever is first.
    offset = {"gzip-mtime": 4, "deflate-data": layer.size // 2, "gzip-crc": layer.size - 8}
    _flip_byte(store.blob_path(layer.digest), offset[where])
    with pytest.raises(IntegrityError) as info:
        write_local(store, desc, tmp_path / "out")
    assert str(layer.digest) in str(info.value)


def test_rootfs_tar_of_busybox(store: ContentStore, image: Descriptor, tmp_path: Path) -> None:
    stream = io.BytesIO()
    write_rootfs_tar(store, image, stream, platform=ARM64)
    with tarfile.open(fileobj=io.BytesIO(stream.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    if os.geteuid() == 0:
        assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}
    split = tmp_path / "split.tar"
    write_rootfs_tar(store, image, split)
    with tarfile.open(split) as tar:
        names = set(tar.getnames())
    assert {"linux_amd64/bin/busybox", "linux_arm64/bin/busybox"} <= names


def test_exporters_fill_the_protocol(
    store: ContentStore, image: Descriptor, tmp_path: Path
) -> None:
    exporters: list[tuple[Exporter, Path]] = [
        (OCILayoutExporter(tmp_path / "o.tar", names=("app:1",)), tmp_path / "o.tar"),
        (OCILayoutExporter(tmp_path / "o", tar=False), tmp_path / "o" / "index.json"),
        (DockerArchiveExporter(tmp_path / "d.tar", repo_tags=["app:1"], platform=AMD64),
         tmp_path / "d.tar"),
        (LocalExporter(tmp_path / "l", platform=AMD64), tmp_path / "l" / "bin" / "busybox"),
        (TarExporter(tmp_path / "t.tar", platform=AMD64), tmp_path / "t.tar"),
    ]
    for exporter, product in exporters:
        written = exporter.export(store, image)
        assert written.digest in (image.digest, _manifest_for(store, image, "amd64").digest)
        assert product.exists()

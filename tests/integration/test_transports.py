"""The transports: every location form read into a store and written from it, each image
checked by pybuild's validator and by an independent reader (skopeo, podman); classic
`docker save` / `podman save` archives read with their names; hostile archives refused
with nothing published.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_config, read_manifest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index
from pybuild.oci.reference import Reference
from pybuild.oci.validate import validate_image
from pybuild.testimages.busybox import build_busybox_layout, import_into_store
from pybuild.transports.docker_archive import read_docker_archive
from pybuild.transports.endpoints import location_of, read_image, write_image
from pybuild.transports.names import (
    DockerArchiveLocation,
    OCIArchiveLocation,
    OCILayoutLocation,
    parse_location,
)
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401
from tests.tooling import require_tool, traversable_dir

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "testdata" / "generated" / "busybox"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ContentStore:
    layout = build_busybox_layout(BASE)
    root = tmp_path_factory.mktemp("transports")
    content = ContentStore(root / "content")
    import_into_store(content, ImageStore(root / "images"), layout)
    return content


@pytest.fixture(scope="module")
def image(store: ContentStore) -> Descriptor:
    (entry,) = Index.parse((BASE / "oci" / "index.json").read_bytes()).manifests
    return Descriptor(media_type=entry.media_type, digest=entry.digest, size=entry.size)


@pytest.fixture(scope="module")
def amd64(store: ContentStore, image: Descriptor) -> Descriptor:
    (desc,) = [d for d, p in platforms_of(store, image) if p.architecture == "amd64"]
    return desc


def _skopeo(*args: str) -> bytes:
    return subprocess.run([require_tool("skopeo"), *args], capture_output=True,
                          check=True).stdout


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config_digest(store: ContentStore, desc: Descriptor) -> str:
    return str(read_manifest(store, desc).config.digest)


# -- every local form, written then read -----------------------------------------------


@pytest.mark.parametrize("form", ["oci:{p}:v1", "oci-archive:{p}:v1", "docker-archive:{p}:app:1"])
def test_write_then_read_every_local_form(store: ContentStore, amd64: Descriptor,
                                          tmp_path: Path, form: str) -> None:
    path = tmp_path / "image"
    location = parse_location(form.format(p=path))
    write_image(store, amd64, location)
    # an independent reader sees the same image (skopeo speaks these very forms; from a
    # docker archive it makes its own manifest, so there the config is compared)
    if not form.startswith("docker-archive"):
        assert _sha(_skopeo("inspect", "--raw", str(location))) == amd64.digest
    assert _sha(_skopeo("inspect", "--raw", "--config", str(location))) == \
        _config_digest(store, amd64)
    fresh = ContentStore(tmp_path / "fresh")
    got = read_image(location, fresh)
    assert got.descriptor.digest == amd64.digest
    assert validate_image(fresh, got.descriptor) == [str(amd64.digest)]
    expected = {"oci": (), "oci-archive": (), "docker-archive": ("docker.io/library/app:1",)}
    assert got.names == expected[form.partition(":")[0]]
    assert location_of(path) == (OCILayoutLocation(path=str(path)) if form.startswith("oci:")
                                 else OCIArchiveLocation(path=str(path))
                                 if form.startswith("oci-archive") else
                                 DockerArchiveLocation(path=str(path)))


def test_full_names_travel_with_the_image(store: ContentStore, image: Descriptor,
                                          tmp_path: Path) -> None:
    location = OCIArchiveLocation(path=str(tmp_path / "a.tar"), name="ghcr.io/o/app:2")
    write_image(store, image, location)
    got = read_image(OCIArchiveLocation(path=location.path), ContentStore(tmp_path / "f"))
    assert got.descriptor == image  # the index, both platforms, without the names
    assert got.names == ("ghcr.io/o/app:2",)
    assert read_image(OCIArchiveLocation(path=location.path, name="2"),
                      ContentStore(tmp_path / "g")).descriptor.digest == image.digest


def test_selectors_are_for_reading(store: ContentStore, amd64: Descriptor,
                                   tmp_path: Path) -> None:
    with pytest.raises(UserError, match="selects an image to read"):
        write_image(store, amd64, OCILayoutLocation(path=str(tmp_path / "l"), index=0))
    with pytest.raises(NotFoundError, match="no such file"):
        read_image(OCILayoutLocation(path=str(tmp_path / "none")), ContentStore(tmp_path / "s"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not an OCI layout directory") as info:
        read_image(OCILayoutLocation(path=str(tmp_path / "file")), ContentStore(tmp_path / "s"))
    assert "oci-archive:" in (info.value.hint or "")


# -- classic docker archives ---------------------------------------------------------------


def test_skopeo_docker_archive_is_read_with_its_name(store: ContentStore, amd64: Descriptor,
                                                     tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_image(store, amd64, OCILayoutLocation(path=str(layout), name="latest"))
    classic = tmp_path / "classic.tar"
    _skopeo("copy", f"oci:{layout}:latest", f"docker-archive:{classic}:example.com/t/app:7")
    with tarfile.open(classic) as tar:
        assert "oci-layout" not in tar.getnames()  # containers/image's classic format
    fresh = ContentStore(tmp_path / "fresh")
    got = read_image(location_of(classic), fresh)
    assert got.names == ("example.com/t/app:7",)
    validate_image(fresh, got.descriptor)
    # no manifest travels in a classic archive: the config (the image id) does
    assert _config_digest(fresh, got.descriptor) == _config_digest(store, amd64)
    manifest = read_manifest(fresh, got.descriptor)
    config = read_config(fresh, manifest)
    assert [d.digest for d in manifest.layers] == list(config.diff_ids)  # stored plain
    assert all(d.media_type == mt.OCI_LAYER for d in manifest.layers)
    # and what pybuild writes from it, skopeo reads back
    out = tmp_path / "again.tar"
    write_image(fresh, got.descriptor, OCIArchiveLocation(path=str(out), name="v"))
    assert _sha(_skopeo("inspect", "--raw", f"oci-archive:{out}:v")) == got.descriptor.digest


def test_podman_save_is_read_with_its_name(store: ContentStore, amd64: Descriptor,
                                           tmp_path: Path) -> None:
    podman = require_tool("podman")
    runroot = traversable_dir("pybuild-podrun-")  # podman wants it under 50 characters
    base = [podman, "--root", str(tmp_path / "storage"), "--runroot", str(runroot),
            "--storage-driver", "vfs", "--cgroup-manager=cgroupfs", "--events-backend=file"]
    ours = tmp_path / "ours.tar"
    write_image(store, amd64, DockerArchiveLocation(path=str(ours),
                                                    reference=Reference.parse("app:1")))
    try:
        for args in (["load", "-i", str(ours)],
                     ["save", "--format", "docker-archive", "-o", str(tmp_path / "saved.tar"),
                      "docker.io/library/app:1"]):
            proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
    finally:
        subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True, timeout=120)
        shutil.rmtree(runroot, ignore_errors=True)
    fresh = ContentStore(tmp_path / "fresh")
    got = read_docker_archive(tmp_path / "saved.tar", fresh)
    assert got.names == ("docker.io/library/app:1",)
    validate_image(fresh, got.descriptor)
    assert _config_digest(fresh, got.descriptor) == _config_digest(store, amd64)


def _layer_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


Members = dict[str, bytes | str]  # name -> content, or a link target (str)


def _moby_archive(path: Path, images: list[dict[str, object]],
                  tamper: Callable[[list[dict[str, object]], Members], None] | None = None
                  ) -> None:
    """A `docker save` archive as moby wrote them before Docker 25: `<id>/layer.tar`
    (repeated layers as links to the first copy), `<config hex>.json`, manifest.json."""
    members: Members = {}
    manifest: list[dict[str, object]] = []
    written: dict[str, str] = {}
    for spec in images:
        layers: list[bytes] = spec["layers"]  # type: ignore[assignment]
        diff_ids = spec.get("diff_ids") or [
            _sha(gzip.decompress(x) if x[:2] == b"\x1f\x8b" else x) for x in layers]
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers",
                                        "diff_ids": diff_ids}}).encode()
        config_name = _sha(config)[7:] + ".json"
        members[config_name] = config
        names = []
        for i, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
            name = f"{hashlib.sha256(f'{config_name}{i}'.encode()).hexdigest()}/layer.tar"
            if diff_id in written:
                members[name] = "../" + written[diff_id]  # a link, as moby makes them
            else:
                members[name] = layer
                written[diff_id] = name
            names.append(name)
        manifest.append({"Config": config_name, "RepoTags": spec.get("tags", []),
                         "Layers": names})
    if tamper is not None:
        tamper(manifest, members)  # type: ignore[arg-type]
    members["manifest.json"] = json.dumps(manifest).encode()
    members["repositories"] = b"{}"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


LAYER_A = _layer_tar({"a.txt": b"a\n"})
LAYER_B = _layer_tar({"b.txt": b"b\n" * 1000})


def test_moby_classic_archive(tmp_path: Path) -> None:
    path = tmp_path / "moby.tar"
    _moby_archive(path, [
        {"layers": [LAYER_A, gzip.compress(LAYER_B), LAYER_A], "tags": ["app:1", "app:one"]},
        {"layers": [LAYER_B], "tags": ["other:2"]},
    ])
    fresh = ContentStore(tmp_path / "s")
    with pytest.raises(UserError, match="holds 2 images; choose one") as info:
        read_image(location_of(path), fresh)
    assert "app:1" in (info.value.hint or "")
    got = read_image(parse_location(f"docker-archive:{path}:app:one"), fresh)
    assert got.names == ("docker.io/library/app:1", "docker.io/library/app:one")
    manifest = read_manifest(fresh, got.descriptor)
    assert [d.digest for d in manifest.layers] == [_sha(LAYER_A), _sha(LAYER_B), _sha(LAYER_A)]
    validate_image(fresh, got.descriptor)
    second = read_image(parse_location(f"docker-archive:{path}:@1"), fresh)
    assert second.names == ("docker.io/library/other:2",)
    with pytest.raises(NotFoundError, match="no image tagged nope:latest"):
        read_image(parse_location(f"docker-archive:{path}:nope"), fresh)


def _config_renamed(manifest: list[dict[str, object]], members: Members) -> None:
    # a config stored under a name that is not its digest
    config = members.pop(str(manifest[0]["Config"]))
    manifest[0]["Config"] = "0" * 64 + ".json"
    members["0" * 64 + ".json"] = config


def _one_layer_more(manifest: list[dict[str, object]], members: Members) -> None:
    layers = manifest[0]["Layers"]
    assert isinstance(layers, list)
    layers.append(layers[0])


def _escaping_link(manifest: list[dict[str, object]], members: Members) -> None:
    layers = manifest[0]["Layers"]
    assert isinstance(layers, list)
    layers[1] = "evil/layer.tar"
    members["evil/layer.tar"] = "../../../etc/passwd"


@pytest.mark.parametrize("lie", ["diff_id", "damaged-gzip", "count", "config-name",
                                 "escape"])
def test_hostile_classic_archives_publish_nothing(tmp_path: Path, lie: str) -> None:
    path = tmp_path / "bad.tar"
    spec: dict[str, object] = {"layers": [LAYER_A, LAYER_B], "tags": ["bad:1"]}
    if lie == "diff_id":  # a layer that is not what the config says (F2's shape)
        spec["diff_ids"] = [_sha(LAYER_A), _sha(b"what the config claims")]
    elif lie == "damaged-gzip":
        spec["layers"] = [LAYER_A, gzip.compress(LAYER_B)[:-20]]
        spec["diff_ids"] = [_sha(LAYER_A), _sha(LAYER_B)]
    tamper = {"config-name": _config_renamed, "escape": _escaping_link,
              "count": _one_layer_more}.get(lie)
    _moby_archive(path, [spec], tamper)
    fresh = ContentStore(tmp_path / "s")
    with pytest.raises(UserError) as info:
        read_docker_archive(path, fresh)
    if lie == "escape":
        assert "leaves the archive" in info.value.message
    else:
        assert isinstance(info.value, IntegrityError), info.value
    published = set(fresh.digests())
    assert _sha(LAYER_B) not in published
    assert not [d for d in published if b'"layers"' in fresh.read(d)]  # no manifest
    assert not fresh.temp_files()


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UserError, match="is not a tar archive") as info:
        location_of(tmp_path / "x.tar")
    assert "docker save" in (info.value.hint or "")
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(UserError, match="not an OCI image layout"):
        read_image(location_of(empty), ContentStore(tmp_path / "s"))


# -- the registry ------------------------------------------------------------------------


def test_registry_form_pushes_and_pulls(store: ContentStore, image: Descriptor,
                                        tmp_path: Path, registry: RunningRegistry  # noqa: F811
                                        ) -> None:
    from pybuild.layers.recompress import compress_image

    packed = compress_image(store, image, "gzip")
    location = parse_location(f"docker://{registry.host}/t/busybox:v1")
    write_image(store, packed, location)
    raw = _skopeo("inspect", "--raw", "--tls-verify=false",
                  f"docker://{registry.host}/t/busybox:v1")
    assert _sha(raw) == packed.digest
    fresh = ContentStore(tmp_path / "fresh")
    got = read_image(location, fresh)
    assert got.descriptor.digest == packed.digest
    assert got.names == (f"{registry.host}/t/busybox:v1",)
    validate_image(fresh, got.descriptor)

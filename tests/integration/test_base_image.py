"""The busybox base image: deterministic, and valid for tools that are not pybuild.

skopeo reads the layout and resolves both platforms; umoci unpacks each platform's
rootfs, where the binary, the applet links, the account files and the modes are checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import subprocess
from pathlib import Path

import pytest

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import platforms_of, read_config, read_manifest
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Index
from pybuild.testimages.busybox import (
    GROUP,
    PASSWD,
    applet_names,
    build_busybox_image,
    build_busybox_layout,
    fetch_debs,
    import_into_store,
    read_deb,
)
from pybuild.transports.oci_layout import write_layout
from tests.tooling import require_tool

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "testdata" / "generated" / "busybox"


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) or "dir", for a byte-for-byte comparison."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def layout() -> Path:
    return build_busybox_layout(BASE)


@pytest.fixture(scope="module")
def stores(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ContentStore,
                                                                             ImageStore]:
    root = tmp_path_factory.mktemp("store")
    content, images = ContentStore(root / "content"), ImageStore(root / "images")
    import_into_store(content, images, layout)
    return content, images


@pytest.fixture(scope="module")
def store(stores: tuple[ContentStore, ImageStore]) -> ContentStore:
    return stores[0]


def _index(layout: Path) -> tuple[str, Index]:
    top = Index.parse((layout / "index.json").read_bytes())
    (entry,) = top.manifests
    data = (layout / "blobs" / "sha256" / entry.digest.hex).read_bytes()
    return entry.digest, Index.parse(data)


def test_layout_shape(layout: Path) -> None:
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    top = Index.parse((layout / "index.json").read_bytes())
    (entry,) = top.manifests
    assert entry.media_type == mt.OCI_INDEX
    assert entry.annotation("org.opencontainers.image.ref.name") == "latest"
    assert entry.annotation("io.containerd.image.name") == "docker.io/library/busybox:latest"
    _, index = _index(layout)
    assert [str(m.platform) for m in index.manifests] == ["linux/amd64", "linux/arm64/v8"]


def test_same_bytes_every_run(layout: Path, tmp_path: Path) -> None:
    cache = BASE / "debs"
    first = build_busybox_image(tmp_path / "a", cache_dir=cache, epoch=946684800)
    second = build_busybox_image(tmp_path / "b", cache_dir=cache, epoch=946684800)
    assert first.index == second.index
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    # The shared layout was made with the default epoch: the very same image.
    if "SOURCE_DATE_EPOCH" not in os.environ:
        assert _tree(tmp_path / "a") == _tree(layout)
    # The epoch is an input: another one gives another image.
    other = build_busybox_image(tmp_path / "c", cache_dir=cache, epoch=946684801)
    assert other.index.digest != first.index.digest


def test_config_and_layer(stores: tuple[ContentStore, ImageStore], layout: Path) -> None:
    store, images = stores
    digest, _ = _index(layout)
    record = images.get("busybox:latest")
    assert record.descriptor.digest == digest
    assert not record.descriptor.annotations  # naming annotations are the layout's, not ours
    for desc, plat in platforms_of(store, record.descriptor):
        manifest = read_manifest(store, desc)
        config = read_config(store, manifest)
        assert config.platform == plat
        assert config.created == "2000-01-01T00:00:00Z" or "SOURCE_DATE_EPOCH" in os.environ
        assert config.config.cmd == ("sh",)
        assert config.config.env_dict()["PATH"].endswith("/usr/bin:/sbin:/bin")
        assert len(config.history) == 1 and len(config.diff_ids) == 1 == len(manifest.layers)
        assert manifest.layers[0].media_type == mt.OCI_LAYER_GZIP
        assert (plat.architecture, plat.variant) in (("amd64", ""), ("arm64", "v8"))


def test_applet_table_matches_busybox_list(layout: Path, tmp_path: Path) -> None:
    debs = {a: read_deb(p) for a, p in fetch_debs(BASE / "debs").items()}
    amd64 = applet_names(debs["amd64"].busybox)
    arm64 = applet_names(debs["arm64"].busybox)
    assert "sh" in amd64 and "busybox" in amd64 and len(amd64) > 100
    if debs["amd64"].version == debs["arm64"].version:
        assert amd64 == arm64
    if platform.machine() not in ("x86_64", "amd64"):
        pytest.skip("the amd64 binary only runs natively on x86_64")
    binary = tmp_path / "busybox"
    binary.write_bytes(debs["amd64"].busybox)
    binary.chmod(0o755)
    listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert tuple(listed) == amd64


def test_skopeo_resolves_both_platforms(layout: Path, store: ContentStore) -> None:
    skopeo = require_tool("skopeo")
    digest, index = _index(layout)
    raw = subprocess.run([skopeo, "inspect", "--raw", f"oci:{layout}:latest"],
                         capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    for child in index.manifests:
        assert child.platform is not None
        arch = child.platform.architecture
        out = subprocess.run(
            [skopeo, "inspect", "--override-os", "linux", "--override-arch", arch,
             f"oci:{layout}:latest"],
            capture_output=True, text=True, check=True,
        ).stdout
        info = json.loads(out)
        manifest = read_manifest(store, child)
        assert info["Architecture"] == arch and info["Os"] == "linux"
        assert info["Layers"] == [str(manifest.layers[0].digest)]
        assert info["Created"].startswith("2000-01-01") or "SOURCE_DATE_EPOCH" in os.environ


def _elf_machine(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF"
    return int.from_bytes(head[18:20], "little")


def test_umoci_unpacks_each_platform(store: ContentStore, layout: Path, tmp_path: Path) -> None:
    umoci = require_tool("umoci")
    _, index = _index(layout)
    flat = tmp_path / "flat"
    # umoci cannot pick a platform from an index: give each manifest its own ref.
    for child in index.manifests:
        assert child.platform is not None
        write_layout(store, child, flat, names=(child.platform.architecture,))
    refs = [m.annotation("org.opencontainers.image.ref.name")
            for m in Index.parse((flat / "index.json").read_bytes()).manifests]
    assert refs == ["amd64", "arm64"]
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    for arch, machine in (("amd64", 0x3E), ("arm64", 0xB7)):
        bundle = tmp_path / f"bundle-{arch}"
        subprocess.run([umoci, "unpack", *rootless, "--image", f"{flat}:{arch}", str(bundle)],
                       capture_output=True, text=True, check=True)
        rootfs = bundle / "rootfs"
        busybox = rootfs / "bin" / "busybox"
        st = busybox.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert _elf_machine(busybox) == machine
        assert os.readlink(rootfs / "bin" / "sh") == "busybox"
        assert os.readlink(rootfs / "bin" / "ls") == "busybox"
        assert (rootfs / "etc" / "passwd").read_text() == PASSWD
        assert (rootfs / "etc" / "group").read_text() == GROUP
        assert stat.S_IMODE((rootfs / "tmp").lstat().st_mode) == 0o1777
        assert stat.S_IMODE((rootfs / "var" / "tmp").lstat().st_mode) == 0o1777
        assert stat.S_IMODE((rootfs / "root").lstat().st_mode) == 0o700
        for d in ("dev", "etc", "home", "proc", "sys", "usr/bin", "usr/sbin"):
            assert (rootfs / d).is_dir()
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, 0)
        assert int(st.st_mtime) == 946684800 or "SOURCE_DATE_EPOCH" in os.environ
        config = json.loads((bundle / "config.json").read_text())
        assert config["process"]["args"] == ["sh"]

"""A deterministic multi-arch busybox base image, made from Debian's `busybox-static` packages.

The tests and the demo need a small real base image without a registry. This module turns
the amd64 and arm64 `.deb`s (fetched once with `apt-get download` into a cache dir) into an
OCI image layout: one gzip layer per architecture, an index naming both platforms. Same
packages and same epoch give the same bytes, every run and on every machine.

The .deb is read here (ar archive + data.tar.*), so neither dpkg-deb nor binfmt is needed.

Applet list: busybox keeps its applet names as one NUL-separated, sorted string table
("[", "[[", "acpid", ...) that its `main` binary-searches. We read that table out of each
architecture's own binary, so the arm64 list never depends on running arm64 code (qemu) or
on both packages being the same version. Tests check the parse against the native
`busybox --list`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import zstandard

from pybuild.content.images import ImageStore
from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.layers.compress import CompressingWriter
from pybuild.layers.tarwriter import LayerWriter
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import DEFAULT_PATH, ContainerConfig, History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform
from pybuild.transports.oci_layout import read_oci_layout, write_layout

PACKAGE = "busybox-static"
ARCHES: tuple[str, ...] = ("amd64", "arm64")
DEFAULT_EPOCH = 946684800  # 2000-01-01T00:00:00Z, when SOURCE_DATE_EPOCH is not set
REF_NAME = "busybox:latest"
# Bump when the image recipe changes, so cached layouts are rebuilt.
RECIPE_VERSION = "1"

SETUP_HINT = (
    "the arm64 package needs the arm64 architecture in apt: run as root "
    "`dpkg --add-architecture arm64 && apt-get update` (scripts/setup.sh does it)"
)

_PLATFORMS = {
    "amd64": Platform(os="linux", architecture="amd64"),
    "arm64": Platform(os="linux", architecture="arm64", variant="v8"),
}
_ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}  # e_machine: EM_X86_64, EM_AARCH64

# Directories of the root filesystem and their modes (Debian's: /root 0700, tmp dirs 1777).
_DIRS: dict[str, int] = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o755,
    "root": 0o700,
    "sys": 0o755,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
}
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\nnogroup:x:65534:\n"


# -- .deb reading -----------------------------------------------------------------------


def ar_members(f: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each member of a Unix `ar` archive (the container of a .deb)."""
    if f.read(8) != b"!<arch>\n":
        raise UserError(f"{getattr(f, 'name', 'file')}: not an ar archive (.deb)")
    while header := f.read(60):
        if len(header) < 60 or header[58:60] != b"`\n":
            raise UserError(f"{getattr(f, 'name', 'file')}: corrupt ar member header")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise UserError(f"{getattr(f, 'name', 'file')}: corrupt ar member size") from None
        data = f.read(size)
        if len(data) != size:
            raise UserError(f"{getattr(f, 'name', 'file')}: truncated ar member {name}")
        if size % 2:
            f.read(1)  # members are 2-byte aligned
        yield name, data


def _decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    if name.endswith(".tar"):
        return data
    raise UserError(f"unsupported .deb member compression: {name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DebPackage:
    path: Path
    version: str
    architecture: str
    busybox: bytes  # the static binary


def read_deb(path: Path) -> DebPackage:
    """The version, architecture and `bin/busybox` of a busybox-static .deb."""
    control: dict[str, str] = {}
    binary: bytes | None = None
    with open(path, "rb") as f:
        for name, data in ar_members(f):
            if name.startswith(("control.tar", "data.tar")):
                with tarfile.open(fileobj=io.BytesIO(_decompress(name, data))) as tar:
                    for info in tar:
                        member = os.path.normpath(info.name)
                        if name.startswith("control.tar") and member == "control":
                            fobj = tar.extractfile(info)
                            assert fobj is not None
                            for line in fobj.read().decode().splitlines():
                                key, sep, value = line.partition(":")
                                if sep and not key.startswith(" "):
                                    control[key.strip()] = value.strip()
                        elif name.startswith("data.tar") and member in (
                            "bin/busybox",
                            "usr/bin/busybox",
                        ):
                            fobj = tar.extractfile(info)
                            assert fobj is not None
                            binary = fobj.read()
    if binary is None or "Version" not in control or "Architecture" not in control:
        raise UserError(f"{path}: no bin/busybox or no control fields; is it {PACKAGE}?")
    return DebPackage(
        path=path, version=control["Version"], architecture=control["Architecture"],
        busybox=binary,
    )


_APPLET = re.compile(rb"^[a-z0-9_.\[-]+$")


def applet_names(binary: bytes) -> tuple[str, ...]:
    """The applet names compiled into a busybox binary, read from its string table.

    The table is the longest run of NUL-separated, strictly ascending names that starts
    with "[" (the first applet in ASCII order of every standard configuration).
    """
    best: list[bytes] = []
    start = 0
    while (i := binary.find(b"\0[\0", start)) >= 0:
        start = i + 1
        names: list[bytes] = []
        pos = i + 1
        while (end := binary.find(b"\0", pos)) > pos:
            name = binary[pos:end]
            if not _APPLET.match(name) or (names and name <= names[-1]):
                break
            names.append(name)
            pos = end + 1
        if len(names) > len(best):
            best = names
    if len(best) < 10 or b"sh" not in best:
        raise UserError("cannot find the applet table in the busybox binary")
    return tuple(n.decode() for n in best)


# -- fetching ------------------------------------------------------------------------------


def _cached_deb(cache_dir: Path, arch: str) -> Path | None:
    found = sorted(cache_dir.glob(f"{PACKAGE}_*_{arch}.deb"))
    return found[-1] if found else None


def fetch_debs(cache_dir: Path, arches: Sequence[str] = ARCHES) -> dict[str, Path]:
    """The .deb of each architecture: from `cache_dir`, else `apt-get download` into it.

    Cached packages are kept (not refreshed), so the image stays the same until the cache
    is cleared. Call under the caller's lock; downloads land in a temp dir first.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = {a: p for a in arches if (p := _cached_deb(cache_dir, a)) is not None}
    missing = [a for a in arches if a not in found]
    if missing:
        if shutil.which("apt-get") is None:
            raise UserError(f"apt-get is not available to download {PACKAGE} ({missing})")
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            proc = subprocess.run(
                ["apt-get", "download", *(f"{PACKAGE}:{a}" for a in missing)],
                cwd=tmp, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise UserError(
                    f"apt-get download {PACKAGE} for {', '.join(missing)} failed: "
                    f"{proc.stderr.strip()[-500:]}",
                    hint=SETUP_HINT,
                )
            for deb in Path(tmp).glob("*.deb"):
                os.replace(deb, cache_dir / deb.name)
        for a in missing:
            path = _cached_deb(cache_dir, a)
            if path is None:
                raise UserError(f"apt-get download left no {PACKAGE} .deb for {a}",
                                hint=SETUP_HINT)
            found[a] = path
    return found


# -- building ---------------------------------------------------------------------------


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_layer(
    busybox: bytes, applets: Sequence[str], *, epoch: int
) -> tuple[bytes, Digest]:
    """(gzip layer blob, diff_id) of the root filesystem; entries sorted, all 0:0 at `epoch`."""
    Add = Callable[[LayerWriter], None]
    entries: list[tuple[str, Add]] = []

    def directory(path: str, mode: int) -> None:
        entries.append((path, lambda w: w.add_dir(path, mode=mode, mtime=epoch)))

    def file(path: str, data: bytes, mode: int) -> None:
        entries.append((path, lambda w: w.add_bytes(path, data, mode=mode, mtime=epoch)))

    def symlink(path: str, target: str) -> None:
        entries.append((path, lambda w: w.add_symlink(path, target, mtime=epoch)))

    for d, mode in _DIRS.items():
        directory(d, mode)
    file("bin/busybox", busybox, 0o755)
    # "busybox" is itself an applet; a symlink there would replace the binary.
    for name in sorted({*applets, "sh"} - {"busybox"}):
        symlink(f"bin/{name}", "busybox")
    file("etc/group", GROUP.encode(), 0o644)
    file("etc/passwd", PASSWD.encode(), 0o644)
    # Sorting by path components gives containerd's walk order: parents first, the names
    # of each directory sorted by their bytes.
    entries.sort(key=lambda e: [p.encode() for p in e[0].split("/")])
    blob = io.BytesIO()
    sink = CompressingWriter(blob, "gzip")
    writer = LayerWriter(sink, mtime=epoch)  # type: ignore[arg-type]
    for _, add in entries:
        add(writer)
    writer.close()
    result = sink.result()
    return blob.getvalue(), result.diff_id


@dataclass(frozen=True, slots=True, kw_only=True)
class BusyboxImage:
    index: Descriptor  # the layout's image (an index)
    manifests: tuple[Descriptor, ...]  # one per platform, with the platform set
    version: str  # the Debian package version(s)


def _image_for(store: ContentStore, deb: DebPackage, arch: str, epoch: int) -> Descriptor:
    if deb.architecture != arch:
        raise UserError(f"{deb.path} is for {deb.architecture}, expected {arch}")
    if deb.busybox[:4] != b"\x7fELF" or int.from_bytes(deb.busybox[18:20], "little") != (
        _ELF_MACHINE[arch]
    ):
        raise UserError(f"{deb.path}: bin/busybox is not an {arch} ELF binary")
    layer, diff_id = build_layer(deb.busybox, applet_names(deb.busybox), epoch=epoch)
    layer_digest = store.write(layer)
    platform = _PLATFORMS[arch]
    created = rfc3339(epoch)
    config = ImageConfig(
        architecture=platform.architecture,
        os=platform.os,
        variant=platform.variant,
        created=created,
        config=ContainerConfig(env=(f"PATH={DEFAULT_PATH}",), cmd=("sh",)),
        diff_ids=(diff_id,),
        history=(
            History(
                created=created,
                created_by=f"pybuild testimages: Debian {PACKAGE} {deb.version} ({arch})",
            ),
        ),
    )
    config_bytes = config.encode()
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(
            media_type=mt.OCI_CONFIG, digest=store.write(config_bytes), size=len(config_bytes)
        ),
        layers=(
            Descriptor(media_type=mt.OCI_LAYER_GZIP, digest=layer_digest, size=len(layer)),
        ),
    )
    data = manifest.encode()
    return Descriptor(
        media_type=mt.OCI_MANIFEST, digest=store.write(data), size=len(data), platform=platform
    )


def build_busybox_image(
    layout_dir: Path,
    *,
    cache_dir: Path,
    epoch: int | None = None,
    arches: Sequence[str] = ARCHES,
    ref_name: str = REF_NAME,
) -> BusyboxImage:
    """Write the busybox image as an OCI layout at `layout_dir` (replacing what is there).

    `epoch` defaults to $SOURCE_DATE_EPOCH, else 2000-01-01. The layout names the index
    `ref_name` (ref.name "latest", as BuildKit names `busybox:latest`).
    """
    epoch = source_date_epoch() if epoch is None else epoch
    debs = {a: read_deb(p) for a, p in fetch_debs(cache_dir, arches).items()}
    layout_dir = layout_dir.absolute()
    layout_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout_dir.parent, prefix=".busybox-") as tmp:
        store = ContentStore(Path(tmp) / "store")
        manifests = tuple(_image_for(store, debs[a], a, epoch) for a in arches)
        index_bytes = Index(media_type=mt.OCI_INDEX, manifests=manifests).encode()
        index = Descriptor(
            media_type=mt.OCI_INDEX, digest=store.write(index_bytes), size=len(index_bytes)
        )
        staged = Path(tmp) / "layout"
        write_layout(store, index, staged, names=(ref_name,))
        # Swap in whole: a reader sees the old layout or the new one, never a mix.
        old = Path(tmp) / "old"
        if layout_dir.exists():
            os.replace(layout_dir, old)
        os.replace(staged, layout_dir)
    versions = sorted({d.version for d in debs.values()})
    return BusyboxImage(index=index, manifests=manifests, version=", ".join(versions))


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return DEFAULT_EPOCH
    try:
        return int(value)
    except ValueError:
        raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builders of one cache dir (pytest-xdist workers build it concurrently)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_busybox_layout(out: Path, *, epoch: int | None = None) -> Path:
    """Make sure `out/oci` holds the busybox layout; the .debs are cached in `out/debs`.

    Rebuilt only when its inputs (packages, epoch, recipe) changed: a stamp records them.
    Returns the layout directory.
    """
    out = out.absolute()
    layout = out / "oci"
    epoch = source_date_epoch() if epoch is None else epoch
    with _locked(out / ".lock"):
        debs = fetch_debs(out / "debs")
        inputs = {
            "recipe": RECIPE_VERSION,
            "epoch": epoch,
            "debs": {a: hashlib.sha256(p.read_bytes()).hexdigest() for a, p in debs.items()},
        }
        stamp = out / "oci.stamp.json"
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(stamp.read_text()) == inputs and (layout / "index.json").exists():
                return layout
        build_busybox_image(layout, cache_dir=out / "debs", epoch=epoch)
        stamp.write_text(json.dumps(inputs, sort_keys=True))
    return layout


def import_into_store(
    store: ContentStore,
    image_store: ImageStore,
    layout_dir: Path,
    name: str = REF_NAME,
) -> Descriptor:
    """Import the layout's image into a pybuild store (verified) and name it `name`."""
    desc = read_oci_layout(layout_dir, store, None)
    image_store.put(name, desc, rfc3339(int(time.time())))
    return desc

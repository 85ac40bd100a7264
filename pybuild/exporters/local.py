"""`type=local` and `type=tar`: the image's final filesystem, as a directory or one tar.

Layers are applied in flattening mode (whiteouts delete, opaque dirs drop what lies
below), each streamed from the store and checked twice on the way: the compressed bytes
against the layer's digest, the uncompressed tar against the config's diff_id.

A multi-platform image is split as BuildKit splits it: one `<os>_<arch>[_<variant>]`
directory (or tar prefix) per platform. The tar form is built by flattening into a
scratch directory next to the destination and writing that tree deterministically; as
for any extraction, file owners survive only when the process may chown (root, or inside
a user namespace that maps them).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import stat
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader
from pybuild.content.walk import platforms_of, read_config, read_manifest, resolve_platform
from pybuild.errors import IntegrityError, UserError
from pybuild.exporters.oci_layout import Dest, open_archive_dest
from pybuild.layers.apply import apply_layer
from pybuild.layers.diff import write_tree
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform

_CHUNK = 1 << 20


def platform_dir_name(platform: Platform) -> str:
    """`linux_amd64`, `linux_arm_v7`: BuildKit's directory name for a platform."""
    norm = Platform.normalize(
        os=platform.os, architecture=platform.architecture, variant=platform.variant
    )
    return str(norm).replace("/", "_")


def _targets(
    store: ContentStore,
    descriptor: Descriptor,
    platform: Platform | None,
    platform_split: bool | None,
) -> list[tuple[Descriptor, str]]:
    """(manifest descriptor, sub-directory or "") for each image to write."""
    if descriptor.media_type not in mt.INDEX_TYPES | mt.MANIFEST_TYPES:
        raise UserError(f"{descriptor.media_type} is not an image", code="bad-manifest")
    if platform is not None or descriptor.media_type in mt.MANIFEST_TYPES:
        if platform is not None:
            desc = resolve_platform(store, descriptor, platform)
        else:
            desc = descriptor
        if platform_split:
            plat = platform or read_config(store, read_manifest(store, desc)).platform
            return [(desc, platform_dir_name(plat))]
        return [(desc, "")]
    # Attestation manifests (BuildKit marks them unknown/unknown) hold no filesystem.
    images = [(d, p) for d, p in platforms_of(store, descriptor) if p.os != "unknown"]
    if not images:
        raise UserError("the image index holds no platform images", code="bad-manifest")
    if len(images) == 1 and not platform_split:
        return [(images[0][0], "")]
    if platform_split is False:
        offered = ", ".join(str(p) for _, p in images)
        raise UserError(
            f"the image has {len(images)} platforms ({offered}); they cannot share one "
            "directory",
            hint="drop platform-split=false, or choose one with --platform",
        )
    names = [platform_dir_name(p) for _, p in images]
    if len(set(names)) != len(names):
        raise UserError(f"the image index lists a platform twice ({', '.join(names)})")
    return [(d, n) for (d, _), n in zip(images, names, strict=True)]


def apply_image(store: ContentStore, manifest_descriptor: Descriptor, dest: Path) -> None:
    """Flatten every layer of one image into `dest` (created if missing)."""
    manifest = read_manifest(store, manifest_descriptor)
    config = read_config(store, manifest)
    if len(config.diff_ids) != len(manifest.layers):
        raise IntegrityError(
            f"image {manifest_descriptor.digest}: the config lists {len(config.diff_ids)} "
            f"diff_ids for {len(manifest.layers)} layers"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        if layer.media_type not in mt.LAYER_TYPES:
            raise UserError(f"layer {layer.digest} has media type {layer.media_type}")
        with store.open(layer.digest, what="layer") as f:
            reader = VerifyingReader(f, layer, "content store")
            try:
                stats = apply_layer(
                    io.BufferedReader(reader, _CHUNK),
                    str(dest),
                    overlay_format=False,
                )
            except (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError) as exc:
                # A blob that does not even decompress is damaged content, not an I/O fault.
                raise IntegrityError(
                    f"layer {layer.digest} in the content store is corrupt: {exc}"
                ) from None
            buf = bytearray(_CHUNK)
            while reader.readinto(buf):  # the rest (gzip trailer, padding) for the digest
                pass
            reader.finish()
        if f"sha256:{stats.diff_id}" != diff_id:
            raise IntegrityError(
                f"layer {layer.digest}: uncompressed content hashes to sha256:{stats.diff_id}, "
                f"the image config says {diff_id}"
            )


def write_local(
    store: ContentStore,
    manifest_descriptor: Descriptor,
    dest_dir: str | os.PathLike[str],
    *,
    platform: Platform | None = None,
    platform_split: bool | None = None,
) -> list[Path]:
    """Write the image's filesystem into `dest_dir`; returns the directories written.

    Existing content of `dest_dir` is written over (BuildKit's local exporter does the same).
    """
    root = Path(dest_dir)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a directory")
    written = []
    for desc, sub in _targets(store, manifest_descriptor, platform, platform_split):
        target = root / sub if sub else root
        apply_image(store, desc, target)
        written.append(target)
    return written


def _force_rmtree(path: Path) -> None:
    """rmtree that also clears directories the image made read-only (e.g. mode 0555)."""

    def retry(func: Callable[..., object], p: str, _exc: object) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
        func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


@contextlib.contextmanager
def _scratch(near: Dest) -> Iterator[Path]:
    """A scratch dir on the destination's filesystem when there is one (no /tmp fill-up)."""
    parent = (
        Path(near).absolute().parent if isinstance(near, str | os.PathLike) else None
    )
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".pybuild-rootfs-", dir=parent))
    try:
        yield path
    finally:
        _force_rmtree(path)


def write_rootfs_tar(
    store: ContentStore,
    manifest_descriptor: Descriptor,
    dest: Dest,
    *,
    platform: Platform | None = None,
    platform_split: bool | None = None,
    mtime: int | None = None,
) -> None:
    """Write the image's flattened filesystem as one tar (`dest` is a path or a stream).

    Entries are in containerd's walk order (parents first, names sorted by bytes) with the
    files' own metadata; `mtime` clamps newer timestamps (SOURCE_DATE_EPOCH).
    """
    targets = _targets(store, manifest_descriptor, platform, platform_split)
    with _scratch(dest) as scratch:
        tree = scratch / "rootfs"
        for desc, sub in targets:
            apply_image(store, desc, tree / sub if sub else tree)
        with open_archive_dest(dest) as out:
            write_tree(str(tree), out, mtime=mtime)  # type: ignore[arg-type]


class LocalExporter:
    """The `type=local` exporter."""

    def __init__(
        self,
        dest_dir: str | os.PathLike[str],
        *,
        platform: Platform | None = None,
        platform_split: bool | None = None,
    ) -> None:
        self.dest_dir = dest_dir
        self.platform = platform
        self.platform_split = platform_split

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        write_local(
            store, descriptor, self.dest_dir, platform=self.platform,
            platform_split=self.platform_split,
        )
        return descriptor


class TarExporter:
    """The `type=tar` exporter."""

    def __init__(
        self,
        dest: Dest,
        *,
        platform: Platform | None = None,
        platform_split: bool | None = None,
        mtime: int | None = None,
    ) -> None:
        self.dest = dest
        self.platform = platform
        self.platform_split = platform_split
        self.mtime = mtime

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        write_rootfs_tar(
            store, descriptor, self.dest, platform=self.platform,
            platform_split=self.platform_split, mtime=self.mtime,
        )
        return descriptor

"""`type=local` and `type=tar`: the image's final filesystem, as a directory or one tar.

Layers are applied in flattening mode (whiteouts delete, opaque dirs drop what lies
below), each streamed from the store and checked twice on the way: the compressed bytes
against the layer's digest, the uncompressed tar against the config's diff_id. Every
path operation stays inside the tree being written (layers/confined.py), and
decompression is bounded (layers/decompress.py).

A multi-platform image is split as BuildKit splits it: one `<os>_<arch>[_<variant>]`
directory (or tar prefix) per platform. As for any extraction, file owners survive only
when the process may chown (root, or inside a user namespace that maps them).

`type=local` writes onto the host, for the invoking user to read and run: by default it
leaves out what would hand the image author a privilege there (block and character
device nodes, set-uid/set-gid bits, `security.capability`), with one warning saying how
much was left out; `privileged-files=true` writes them as the image has them. The image is
flattened into a private (0700) staging directory inside the destination and moved into
place only when every layer applied and verified, so a failed export (a corrupt layer, a
full disk, a decompression bomb) leaves the destination as it was. Existing content of
the destination is written over, entry by entry, as BuildKit's local exporter does in its
default `mode=copy`.

`type=tar` flattens into a private scratch directory next to the destination, faithfully
(a tar on the host grants nothing by itself), and writes that tree deterministically.
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
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader
from pybuild.content.walk import platforms_of, read_config, read_manifest, resolve_platform
from pybuild.errors import IntegrityError, UserError
from pybuild.layers.apply import HOST_SAFE, KEEP_ALL, FilePrivileges, apply_layer
from pybuild.layers.decompress import DEFAULT_LIMITS, ExpansionLimits
from pybuild.layers.diff import write_tree
from pybuild.layers.errors import LayerWriteError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.transports.destination import Dest, open_destination, writes_in_place

Warn = Callable[[str], None]
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

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


@dataclass
class Flattened:
    """What a flattening left out on purpose (see FilePrivileges), over all layers."""

    dropped_devices: int = 0
    stripped_setid: int = 0
    dropped_capabilities: int = 0

    def notice(self) -> str | None:
        """One line for the user, or None when nothing was left out."""
        parts = []
        if self.dropped_devices:
            parts.append(f"{self.dropped_devices} device node(s)")
        if self.stripped_setid:
            parts.append(f"the set-uid/set-gid bits of {self.stripped_setid} file(s)")
        if self.dropped_capabilities:
            parts.append(f"the file capabilities of {self.dropped_capabilities} file(s)")
        if not parts:
            return None
        listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
        return (f"type=local: did not write {listed} from the image; add "
                "privileged-files=true to write them as the image has them")


def apply_image(
    store: ContentStore,
    manifest_descriptor: Descriptor,
    dest: Path,
    *,
    privileges: FilePrivileges = KEEP_ALL,
    limits: ExpansionLimits = DEFAULT_LIMITS,
) -> Flattened:
    """Flatten every layer of one image into `dest` (created if missing)."""
    left_out = Flattened()
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
            reader = VerifyingReader(f, layer.digest, layer.size, where="content store")
            try:
                stats = apply_layer(
                    io.BufferedReader(reader, _CHUNK),
                    str(dest),
                    overlay_format=False,
                    privileges=privileges,
                    limits=limits,
                    layer=f"layer {layer.digest}",
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
        left_out.dropped_devices += stats.dropped_devices
        left_out.stripped_setid += stats.stripped_setid
        left_out.dropped_capabilities += stats.dropped_capabilities
    return left_out


def write_local(
    store: ContentStore,
    manifest_descriptor: Descriptor,
    dest_dir: str | os.PathLike[str],
    *,
    platform: Platform | None = None,
    platform_split: bool | None = None,
    privileges: FilePrivileges = HOST_SAFE,
    limits: ExpansionLimits = DEFAULT_LIMITS,
    warn: Warn | None = None,
) -> list[Path]:
    """Write the image's filesystem into `dest_dir`; returns the directories written.

    Existing content of `dest_dir` is written over (BuildKit's local exporter does the
    same); on any error it is left as it was. What `privileges` left out is reported to
    `warn` in one line.
    """
    root = Path(dest_dir)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a directory")
    targets = _targets(store, manifest_descriptor, platform, platform_split)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pybuild-export-", dir=root))
    except OSError as exc:
        raise LayerWriteError(doing="type=local export", dest=str(root), entry="",
                              cause=exc) from None
    left_out = Flattened()
    try:
        for desc, sub in targets:
            got = apply_image(store, desc, staging / sub if sub else staging,
                              privileges=privileges, limits=limits)
            left_out.dropped_devices += got.dropped_devices
            left_out.stripped_setid += got.stripped_setid
            left_out.dropped_capabilities += got.dropped_capabilities
        try:
            _move_into(staging, root)
            staging.rmdir()
        except OSError as exc:
            raise LayerWriteError(doing="type=local export", dest=str(root),
                                  entry=getattr(exc, "filename", "") or "", cause=exc) from None
    except BaseException:
        _force_rmtree(staging)
        if created:
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    notice = left_out.notice()
    if notice and warn is not None:
        warn(notice)
    return [root / sub if sub else root for _, sub in targets]


def _move_into(src: Path, dst: Path) -> None:
    """Move the tree `src` into the directory `dst`, entry by entry: an existing directory
    takes the new one's children (and then its owner, mode and mtime), anything else in
    the way is replaced. Nothing in `dst` is followed: its symlinks are entries too."""
    sfd = os.open(src, _READ_DIR)
    try:
        dfd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the user's choice
        try:
            _move_children(sfd, dfd, dst)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _move_children(sfd: int, dfd: int, dpath: Path) -> None:
    for text in os.listdir(sfd):
        st = os.stat(text, dir_fd=sfd, follow_symlinks=False)
        try:
            old: os.stat_result | None = os.stat(text, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        is_dir = stat.S_ISDIR(st.st_mode)
        if old is not None and is_dir and stat.S_ISDIR(old.st_mode):
            # Both must be open and writable for the move, whatever the image's modes say
            # (0555, 0311): the staging dir is removed next, the existing one gets the
            # image's mode back below.
            _lend_rwx(sfd, text, st)
            _lend_rwx(dfd, text, old)
            sub_s = os.open(text, _READ_DIR, dir_fd=sfd)
            try:
                sub_d = os.open(text, _READ_DIR, dir_fd=dfd)
                try:
                    _move_children(sub_s, sub_d, dpath / text)
                    _copy_dir_metadata(st, sub_d)
                finally:
                    os.close(sub_d)
            finally:
                os.close(sub_s)
            os.rmdir(text, dir_fd=sfd)
            continue
        if old is not None and stat.S_ISDIR(old.st_mode):
            try:
                shutil.rmtree(text, dir_fd=dfd)
            except OSError:
                _force_rmtree(dpath / text)  # read-only dirs of an earlier export
        elif old is not None and is_dir:
            os.unlink(text, dir_fd=dfd)
        _rename(sfd, dfd, text, st)


def _rename(sfd: int, dfd: int, name: str, st: os.stat_result) -> None:
    """renameat; a directory moving to another parent must be writable (its ".." entry
    changes), which an image's 0555 directory is not for a non-root user: lend u+w."""
    try:
        os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
        return
    except PermissionError:
        if not stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IWUSR:
            raise
    mode = stat.S_IMODE(st.st_mode)
    os.chmod(name, mode | stat.S_IWUSR, dir_fd=sfd, follow_symlinks=False)
    os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
    os.chmod(name, mode, dir_fd=dfd, follow_symlinks=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)


def _lend_rwx(parent: int, name: str, st: os.stat_result) -> None:
    if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(name, stat.S_IMODE(st.st_mode) | stat.S_IRWXU, dir_fd=parent,
                 follow_symlinks=False)


def _copy_dir_metadata(st: os.stat_result, fd: int) -> None:
    with contextlib.suppress(PermissionError):
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


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
    limits: ExpansionLimits = DEFAULT_LIMITS,
) -> None:
    """Write the image's flattened filesystem as one tar (`dest` is a path or a stream).

    Entries are in containerd's walk order (parents first, names sorted by bytes) with the
    files' own metadata; `mtime` clamps newer timestamps (SOURCE_DATE_EPOCH).
    """
    targets = _targets(store, manifest_descriptor, platform, platform_split)
    # The destination first (a missing parent or a directory fails before any work); the
    # scratch tree next to a file it replaces, in the temp dir for a device or a stream.
    with (open_destination(dest, what="filesystem tar") as out,
          _scratch(out if writes_in_place(dest) else dest) as scratch):
        tree = scratch / "rootfs"
        for desc, sub in targets:
            apply_image(store, desc, tree / sub if sub else tree, limits=limits)
        write_tree(str(tree), out, mtime=mtime)


class LocalExporter:
    """The `type=local` exporter. `privileged_files`: write device nodes, set-id bits and
    file capabilities as the image has them (`privileged-files=true`)."""

    def __init__(
        self,
        dest_dir: str | os.PathLike[str],
        *,
        platform: Platform | None = None,
        platform_split: bool | None = None,
        privileged_files: bool = False,
        limits: ExpansionLimits = DEFAULT_LIMITS,
        warn: Warn | None = None,
    ) -> None:
        self.dest_dir = dest_dir
        self.platform = platform
        self.platform_split = platform_split
        self.privileges = KEEP_ALL if privileged_files else HOST_SAFE
        self.limits = limits
        self.warn = warn

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        write_local(
            store, descriptor, self.dest_dir, platform=self.platform,
            platform_split=self.platform_split, privileges=self.privileges,
            limits=self.limits, warn=self.warn,
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
        limits: ExpansionLimits = DEFAULT_LIMITS,
    ) -> None:
        self.dest = dest
        self.platform = platform
        self.platform_split = platform_split
        self.mtime = mtime
        self.limits = limits

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        try:
            write_rootfs_tar(
                store, descriptor, self.dest, platform=self.platform,
                platform_split=self.platform_split, mtime=self.mtime, limits=self.limits,
            )
        except OSError as exc:  # writing the tar itself: a full disk, an unwritable dest
            where = str(self.dest) if isinstance(self.dest, str | os.PathLike) else "stdout"
            raise LayerWriteError(doing="type=tar export", dest=where, entry="",
                                  cause=exc) from None
        return descriptor

"""Apply a layer tar to a directory.

Two modes:
* overlay format (default): `dest` becomes an overlay lowerdir stacked above
  the lower layers' dirs. `.wh.NAME` becomes a 0/0 character device NAME and
  `.wh..wh..opq` sets `user.overlay.opaque=y` (the overlay is mounted with
  `userxattr`), exactly what the kernel itself writes to an upper dir.
* flattening: the layer is applied onto an existing tree; whiteout targets are
  deleted and opaque dirs lose every child this layer did not write.

Entry names may not climb out with "..", absolute names are made relative, and
parent directories are resolved inside `dest` (a symlink is followed as if
`dest` were "/"), so nothing outside `dest` is ever touched.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass, field
from typing import BinaryIO

from pybuild.layers import tarformat as tf
from pybuild.layers.decompress import decompressed, open_layer_stream
from pybuild.layers.errors import LayerError
from pybuild.layers.tarreader import TarEntry, TarReader
from pybuild.layers.xattrs import is_overlay_xattr

__all__ = ["ApplyStats", "apply_layer", "open_layer_stream"]

OPAQUE_XATTR = "user.overlay.opaque"
_WH = tf.WHITEOUT_PREFIX.encode()
_WH_META = tf.WHITEOUT_META_PREFIX.encode()
_WH_OPQ = tf.WHITEOUT_OPAQUE.encode()
_MAX_SYMLINK_HOPS = 255
_MAX_WARNINGS = 50
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ApplyStats:
    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    whiteouts: int = 0
    opaques: int = 0
    data_bytes: int = 0  # file content written
    tar_size: int = 0  # uncompressed stream size, padding included
    diff_id: str = ""  # hex sha256 of the uncompressed stream
    skipped_devices: int = 0  # mknod refused (inside a user namespace)
    skipped_xattrs: int = 0
    chown_failures: int = 0  # owner not mapped in this user namespace
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)


def _clean(name: bytes) -> list[bytes]:
    parts = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            raise LayerError(f"layer entry {os.fsdecode(name)!r} escapes the layer root")
        parts.append(part)
    return parts


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class _Applier:
    def __init__(self, dest: str, overlay: bool, opaque_xattr: str, whiteouts: bool) -> None:
        self.dest = os.fsencode(os.path.realpath(dest))
        self.whiteouts = whiteouts
        if not stat.S_ISDIR(os.lstat(self.dest).st_mode):
            raise LayerError(f"{dest}: not a directory")
        self.overlay = overlay
        self.opaque_xattr = opaque_xattr
        self.stats = ApplyStats()
        self.dirs: dict[bytes, tuple[int, int]] = {}  # mode and mtime, set last
        self.unpacked: set[bytes] = set()  # absolute paths written by this layer
        self.cache: dict[bytes, bytes] = {}  # entry parent -> resolved absolute dir

    def run(self, reader: TarReader) -> ApplyStats:
        for entry in reader:
            self.stats.entries += 1
            self._entry(entry, reader)
        self._finish_dirs()
        self.stats.tar_size = reader.size
        self.stats.diff_id = reader.diff_id
        return self.stats

    # -- paths ----------------------------------------------------------------

    def _resolve(self, parts: list[bytes], *, create: bool) -> bytes | None:
        """The real directory for `parts` inside dest; missing dirs are made if `create`."""
        key = b"/".join(parts)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        resolved: list[bytes] = []
        todo = parts[::-1]
        hops = 0
        while todo:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                if resolved:
                    resolved.pop()
                continue
            current = self.dest + b"".join(b"/" + r for r in resolved) + b"/" + part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(current, 0o755)
                os.chmod(current, 0o755)  # independent of the umask
                resolved.append(part)
                continue
            if stat.S_ISDIR(st.st_mode):
                resolved.append(part)
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise LayerError(f"too many symlinks resolving {os.fsdecode(key)!r}")
                target = os.readlink(current)
                if target.startswith(b"/"):
                    resolved = []
                todo.extend(target.split(b"/")[::-1])
            elif create and self.overlay and _is_whiteout(st):
                # Deleted below, recreated here: an opaque dir, as the kernel makes it.
                os.unlink(current)
                self._make_opaque_dir(current)
                resolved.append(part)
            elif create:
                raise LayerError(
                    f"layer entry under {os.fsdecode(key)!r}: parent is not a directory"
                )
            else:
                return None
        result = self.dest + b"".join(b"/" + r for r in resolved)
        self.cache[key] = result
        return result

    @staticmethod
    def _is_whiteout_at(path: bytes) -> bool:
        try:
            return _is_whiteout(os.lstat(path))
        except FileNotFoundError:
            return False

    def _make_opaque_dir(self, path: bytes) -> None:
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
        self._set_opaque(path)

    def _set_opaque(self, path: bytes) -> None:
        try:
            os.setxattr(path, self.opaque_xattr, b"y", follow_symlinks=False)
        except OSError as err:
            raise LayerError(
                f"cannot mark {os.fsdecode(path)} opaque ({self.opaque_xattr}): {err}"
            ) from None

    def _remove_existing(self, path: bytes, keep_dir: bool) -> bool:
        """Clear `path` for a new entry. True if it is a directory to merge into."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(path)
            self.cache.clear()
        else:
            os.unlink(path)
            if stat.S_ISLNK(st.st_mode):
                self.cache.clear()
        return False

    # -- entries ----------------------------------------------------------------

    def _entry(self, e: TarEntry, reader: TarReader) -> None:
        parts = _clean(e.name)
        if not parts:
            if self.overlay and e.type == tf.DIR:
                self._metadata(self.dest, e, is_dir=True)
                self.dirs[self.dest] = (e.mode, e.mtime)
            return
        base = parts[-1]
        if base.startswith(_WH) and self.whiteouts:
            self._whiteout(parts[:-1], base)
            return
        parent = self._resolve(parts[:-1], create=True)
        assert parent is not None
        path = parent + b"/" + base
        kind = e.type
        if kind == tf.LINK:
            self._hardlink(path, e)
        elif kind == tf.DIR:
            if self.overlay and self._is_whiteout_at(path):
                os.unlink(path)
                self._make_opaque_dir(path)
            elif not self._remove_existing(path, keep_dir=True):
                os.mkdir(path, 0o700)
            self._metadata(path, e, is_dir=True)
            self.dirs[path] = (e.mode, e.mtime)
            self.cache[b"/".join(parts)] = path
            self.stats.dirs += 1
        elif kind == tf.REG:
            self._remove_existing(path, keep_dir=False)
            self._regular(path, e, reader)
        elif kind == tf.SYMLINK:
            self._remove_existing(path, keep_dir=False)
            os.symlink(e.linkname, path)
            self._metadata(path, e, symlink=True)
            self.stats.symlinks += 1
        elif kind in (tf.CHR, tf.BLK, tf.FIFO):
            self._remove_existing(path, keep_dir=False)
            if not self._special(path, e):
                return
        else:
            raise LayerError(f"layer entry {os.fsdecode(e.name)!r} has unsupported type {e.type!r}")
        self.unpacked.add(path)

    def _regular(self, path: bytes, e: TarEntry, reader: TarReader) -> None:
        fd = os.open(path, _NEW_FILE, 0o600)
        try:
            if e.size:
                self.stats.data_bytes += reader.copy_data(lambda mv: _write_all(fd, mv))
            self._chown(fd, e, path)
            self._set_xattrs(fd, e, path, user_ok=True)
            os.fchmod(fd, e.mode)
            os.utime(fd, ns=(e.mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)
        self.stats.files += 1

    def _special(self, path: bytes, e: TarEntry) -> bool:
        if e.type == tf.FIFO:
            os.mkfifo(path, 0o600)
            self.stats.fifos += 1
        else:
            kind = stat.S_IFCHR if e.type == tf.CHR else stat.S_IFBLK
            try:
                os.mknod(path, kind | 0o600, os.makedev(e.devmajor, e.devminor))
            except PermissionError:
                # Real devices cannot be created inside a user namespace.
                self.stats.skipped_devices += 1
                self.stats.warn(f"skipped device {os.fsdecode(e.name)}: mknod not permitted")
                return False
            self.stats.devices += 1
        self._metadata(path, e)
        os.chmod(path, e.mode)
        return True

    def _hardlink(self, path: bytes, e: TarEntry) -> None:
        tparts = _clean(e.linkname)
        tparent = self._resolve(tparts[:-1], create=False) if tparts else None
        target = tparent + b"/" + tparts[-1] if tparent is not None else None
        try:
            tst = os.lstat(target) if target is not None else None
        except FileNotFoundError:
            tst = None
        if target is None or tst is None or stat.S_ISDIR(tst.st_mode):
            raise LayerError(
                f"hard link {os.fsdecode(e.name)!r} -> {os.fsdecode(e.linkname)!r}: "
                "target is not a file earlier in this layer"
            )
        if target == path:
            return
        self._remove_existing(path, keep_dir=False)
        os.link(target, path, follow_symlinks=False)
        self.stats.hardlinks += 1

    def _whiteout(self, parent_parts: list[bytes], base: bytes) -> None:
        if base == _WH_OPQ:
            self.stats.opaques += 1
            if self.overlay:
                d = self._resolve(parent_parts, create=True)
                assert d is not None
                self._set_opaque(d)
            else:
                d = self._resolve(parent_parts, create=False)
                if d is not None:
                    self._clear_opaque(d)
            return
        if base.startswith(_WH_META):
            self.stats.warn(f"ignored whiteout metadata entry {os.fsdecode(base)}")
            return
        name = base[len(_WH) :]
        if name in (b"", b".", b".."):
            raise LayerError(f"invalid whiteout name {os.fsdecode(base)!r}")
        self.stats.whiteouts += 1
        d = self._resolve(parent_parts, create=self.overlay)
        if d is None:
            return  # flattening: nothing below to delete
        path = d + b"/" + name
        if path in self.unpacked:
            return  # whiteouts only hide lower layers, never this one
        self._remove_existing(path, keep_dir=False)
        if self.overlay:
            try:
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
            except PermissionError:
                raise LayerError(
                    "cannot create an overlay whiteout (0/0 character device); "
                    "this kernel does not allow it here"
                ) from None

    def _clear_opaque(self, d: bytes) -> None:
        """Flattening: drop every child of `d` this layer did not write."""
        for name in os.listdir(d):
            path = d + b"/" + name
            st = os.lstat(path)
            if path in self.unpacked:
                if stat.S_ISDIR(st.st_mode):
                    self._clear_opaque(path)
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        self.cache.clear()

    # -- metadata ---------------------------------------------------------------

    def _metadata(
        self, path: bytes, e: TarEntry, *, is_dir: bool = False, symlink: bool = False
    ) -> None:
        """Owner and xattrs now; mode and mtime of dirs are set at the end."""
        self._chown(path, e, path)
        self._set_xattrs(path, e, path, user_ok=is_dir)
        if not is_dir:
            os.utime(path, ns=(e.mtime * 1_000_000_000,) * 2, follow_symlinks=not symlink)

    def _chown(self, target: int | bytes, e: TarEntry, path: bytes) -> None:
        try:
            if isinstance(target, int):
                os.fchown(target, e.uid, e.gid)
            else:
                os.chown(target, e.uid, e.gid, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EINVAL):
                raise
            # EINVAL: the id is not mapped in this user namespace.
            self.stats.chown_failures += 1
            self.stats.warn(f"cannot chown {os.fsdecode(path)} to {e.uid}:{e.gid}: {err.strerror}")

    def _set_xattrs(self, target: int | bytes, e: TarEntry, path: bytes, *, user_ok: bool) -> None:
        for name, value in e.xattrs.items():
            if is_overlay_xattr(name):
                # A layer must not smuggle overlay bookkeeping into a lowerdir.
                self.stats.skipped_xattrs += 1
                self.stats.warn(f"dropped {name} on {os.fsdecode(path)}")
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as err:
                privileged = name.startswith(("security.", "trusted."))
                unsupported = err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
                denied = err.errno in (errno.EPERM, errno.EACCES) and (privileged or not user_ok)
                if not (unsupported or denied):
                    raise LayerError(f"cannot set {name} on {os.fsdecode(path)}: {err}") from None
                self.stats.skipped_xattrs += 1
                self.stats.warn(f"skipped xattr {name} on {os.fsdecode(path)}: {err.strerror}")

    def _finish_dirs(self) -> None:
        # Deepest first, so setting a parent's mtime is the last change to it.
        for path in sorted(self.dirs, key=lambda p: p.count(b"/"), reverse=True):
            mode, mtime = self.dirs[path]
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:
                continue
            os.chmod(path, mode)
            os.utime(path, ns=(mtime * 1_000_000_000,) * 2, follow_symlinks=False)


def apply_layer(
    tar_stream: BinaryIO,
    dest: str,
    *,
    overlay_format: bool = True,
    opaque_xattr: str = OPAQUE_XATTR,
    whiteouts: bool = True,
) -> ApplyStats:
    """Extract a layer (plain, gzip or zstd; sniffed by magic bytes) into `dest`.
    With `whiteouts=False` the tar is a plain archive (build-context files): a file
    named `.wh.x` is just a file."""
    applier = _Applier(dest, overlay_format, opaque_xattr, whiteouts)
    reader = TarReader(decompressed(tar_stream))
    return applier.run(reader)


def apply_layer_file(path: str, dest: str, *, overlay_format: bool = True) -> ApplyStats:
    with open(path, "rb") as f:
        return apply_layer(f, dest, overlay_format=overlay_format)

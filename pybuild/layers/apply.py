"""Apply a layer tar to a directory.

Two modes:
* overlay format (default): `dest` becomes an overlay lowerdir stacked above
  the lower layers' dirs. `.wh.NAME` becomes a 0/0 character device NAME and
  `.wh..wh..opq` sets `user.overlay.opaque=y` (the overlay is mounted with
  `userxattr`), exactly what the kernel itself writes to an upper dir.
* flattening: the layer is applied onto an existing tree; whiteout targets are
  deleted and opaque dirs lose every child this layer did not write.

Nothing outside `dest` is ever touched, whatever the layer says and in whatever order:
entry names may not climb out with "..", absolute names are made relative, and every
operation (create, unlink, chown, chmod, utime, xattrs, link targets, and the mode and
mtime of directories, which are set last) addresses its target as (directory fd, name),
the directory resolved inside `dest` at that moment (`confined.DirStack`: a symlink in
a parent is followed as if `dest` were "/", and never by the kernel).

`privileges` says whether device nodes, set-uid/set-gid bits and file capabilities are
written (a snapshot: yes; a directory on the host that the invoking user reads: not by
default, see exporters/local.py). Decompression is bounded by `limits`. A file system
error (full disk, a name too long) is a LayerWriteError naming the entry.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import BinaryIO

from pybuild.layers import tarformat as tf
from pybuild.layers.confined import DirStack, open_root, read_dir_fd, remove_tree
from pybuild.layers.decompress import (
    DEFAULT_LIMITS,
    ExpansionLimits,
    decompressed,
    open_layer_stream,
)
from pybuild.layers.errors import LayerError, LayerWriteError, shown_name
from pybuild.layers.privileges import HOST_SAFE, KEEP_ALL, FilePrivileges
from pybuild.layers.tarreader import TarEntry, TarReader
from pybuild.layers.xattrs import CAPABILITY, is_overlay_xattr

__all__ = [
    "HOST_SAFE",
    "KEEP_ALL",
    "ApplyStats",
    "FilePrivileges",
    "apply_layer",
    "open_layer_stream",
]

OPAQUE_XATTR = "user.overlay.opaque"
_WH = tf.WHITEOUT_PREFIX.encode()
_WH_META = tf.WHITEOUT_META_PREFIX.encode()
_WH_OPQ = tf.WHITEOUT_OPAQUE.encode()
_MAX_WARNINGS = 50
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


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
    dropped_devices: int = 0  # left out by `privileges`
    stripped_setid: int = 0  # set-uid/set-gid bits cleared by `privileges`
    dropped_capabilities: int = 0  # security.capability left out by `privileges`
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)


_MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "leave unchanged" to chown
_NS_LIMIT = (1 << 63) - 1  # utimensat takes a 64-bit time_t worth of nanoseconds


def _ns(mtime: int) -> tuple[int, int]:
    """atime and mtime in ns; an absurd PAX mtime is clamped, not a crash."""
    ns = max(-_NS_LIMIT, min(mtime * 1_000_000_000, _NS_LIMIT))
    return ns, ns


def _check(e: TarEntry) -> None:
    """What the kernel could not even be asked for: a name or link with a NUL byte, an
    owner no uid_t holds."""
    if b"\0" in e.name or b"\0" in e.linkname:
        raise LayerError(f"layer entry {shown_name(e.name)} has a NUL byte in its name or link")
    if not (0 <= e.uid <= _MAX_ID and 0 <= e.gid <= _MAX_ID):
        raise LayerError(f"layer entry {shown_name(e.name)} has an invalid owner {e.uid}:{e.gid}")
    if any("\0" in name for name in e.xattrs):
        raise LayerError(f"layer entry {shown_name(e.name)} has a NUL byte in an xattr name")


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


def _lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# A target for metadata calls: an open fd, or (parent fd, name) for what cannot be opened
# without side effects (symlinks, devices, fifos). The parent is always the main stack's top.
_Target = int | tuple[int, bytes]


class _Applier:
    def __init__(
        self,
        dest: str,
        *,
        overlay: bool,
        opaque_xattr: str,
        whiteouts: bool,
        privileges: FilePrivileges,
        what: str,
    ) -> None:
        self.dest = dest
        self.what = what
        self.overlay = overlay
        self.opaque_xattr = opaque_xattr
        self.whiteouts = whiteouts
        self.privileges = privileges
        self.stats = ApplyStats()
        self.root_fd = open_root(dest)
        root_path = os.fsencode(os.path.realpath(dest))
        self.main = DirStack(self.root_fd, root_path)  # the parent of the current entry
        self.side = DirStack(self.root_fd, root_path)  # hard link targets
        self.dirs: dict[bytes, tuple[int, int, int]] = {}  # key -> mode, mtime, inode
        self.unpacked: set[bytes] = set()  # resolved keys written by this layer

    def close(self) -> None:
        self.main.close()
        self.side.close()
        os.close(self.root_fd)

    def run(self, reader: TarReader) -> ApplyStats:
        entry: bytes = b""
        try:
            for e in reader:
                entry = e.name
                self.stats.entries += 1
                self._entry(e, reader)
            entry = b""
            self._finish_dirs()
        except OSError as err:
            raise LayerWriteError(doing=f"unpacking {self.what}", dest=self.dest, entry=entry,
                                  cause=err) from None
        self.stats.tar_size = reader.size
        self.stats.diff_id = reader.diff_id
        return self.stats

    # -- paths ----------------------------------------------------------------

    def _key(self, name: bytes) -> bytes:
        """The resolved path of `name` in the main stack's top, relative to dest."""
        top = self.main.key
        return top + b"/" + name if top else name

    def _parent(self, parts: list[bytes], *, create: bool) -> int | None:
        return self.main.resolve(parts, create=create, blocked=self._blocked)

    def _blocked(self, parent: int, name: bytes, st: os.stat_result) -> bool:
        if not (self.overlay and _is_whiteout(st)):
            return False
        # Deleted below, recreated here: an opaque dir, as the kernel makes it.
        os.unlink(name, dir_fd=parent)
        self._make_opaque_dir(parent, name)
        return True

    def _make_opaque_dir(self, parent: int, name: bytes) -> None:
        os.mkdir(name, 0o755, dir_fd=parent)
        fd = read_dir_fd(parent, name)
        try:
            os.fchmod(fd, 0o755)
            self._set_opaque(fd, name)
        finally:
            os.close(fd)

    def _set_opaque(self, fd: int, name: bytes) -> None:
        try:
            os.setxattr(fd, self.opaque_xattr, b"y")
        except OSError as err:
            raise LayerError(
                f"cannot mark {os.fsdecode(name) or '/'} opaque ({self.opaque_xattr}): {err}"
            ) from None

    def _remove(self, parent: int, name: bytes, st: os.stat_result) -> None:
        """Delete `name` (never followed) to make room for a new entry."""
        if stat.S_ISDIR(st.st_mode):
            remove_tree(parent, name)
            self.side.reset()  # it may have held the removed dir
        else:
            os.unlink(name, dir_fd=parent)

    # -- entries ----------------------------------------------------------------

    def _entry(self, e: TarEntry, reader: TarReader) -> None:
        _check(e)
        parts = _clean(e.name)
        if not parts:
            if self.overlay and e.type == tf.DIR:
                fd = read_dir_fd(self.root_fd, b".")
                try:
                    self._chown(fd, e)
                    self._set_xattrs(fd, e, user_ok=True)
                    self.dirs[b""] = (e.mode, e.mtime, os.fstat(fd).st_ino)
                finally:
                    os.close(fd)
            return
        base = parts[-1]
        if base.startswith(_WH) and self.whiteouts:
            self._whiteout(parts[:-1], base)
            return
        parent = self._parent(parts[:-1], create=True)
        assert parent is not None
        key = self._key(base)
        kind = e.type
        if kind == tf.LINK:
            self._hardlink(parent, base, key, e)
        elif kind == tf.DIR:
            self._directory(parent, base, key, e)
        elif kind == tf.REG:
            st = _lstat(parent, base)
            if st is not None:
                self._remove(parent, base, st)
            self._regular(parent, base, e, reader)
        elif kind == tf.SYMLINK:
            st = _lstat(parent, base)
            if st is not None:
                self._remove(parent, base, st)
            os.symlink(e.linkname, base, dir_fd=parent)
            self._metadata((parent, base), e)
            self.stats.symlinks += 1
        elif kind in (tf.CHR, tf.BLK, tf.FIFO):
            st = _lstat(parent, base)
            if st is not None:
                self._remove(parent, base, st)
            if not self._special(parent, base, e):
                return
        else:
            raise LayerError(f"layer entry {os.fsdecode(e.name)!r} has unsupported type {e.type!r}")
        self.unpacked.add(key)

    def _directory(self, parent: int, base: bytes, key: bytes, e: TarEntry) -> None:
        st = _lstat(parent, base)
        if st is not None and self.overlay and _is_whiteout(st):
            os.unlink(base, dir_fd=parent)
            self._make_opaque_dir(parent, base)
        elif st is None:
            os.mkdir(base, 0o700, dir_fd=parent)
        elif not stat.S_ISDIR(st.st_mode):
            self._remove(parent, base, st)
            os.mkdir(base, 0o700, dir_fd=parent)
        if not e.xattrs:
            # The common case, by name: fchownat and fstatat never follow `base`, and
            # `parent` is the directory just resolved. Two syscalls instead of four.
            self._chown((parent, base), e)
            ino = os.stat(base, dir_fd=parent, follow_symlinks=False).st_ino
        else:
            try:
                fd = read_dir_fd(parent, base)
            except PermissionError:
                # An existing dir this user may not read (flattening as non-root).
                self._chown((parent, base), e)
                self._set_xattrs((parent, base), e, user_ok=True)
                ino = os.stat(base, dir_fd=parent, follow_symlinks=False).st_ino
            else:
                try:
                    self._chown(fd, e)
                    self._set_xattrs(fd, e, user_ok=True)
                    ino = os.fstat(fd).st_ino
                finally:
                    os.close(fd)
        self.dirs[key] = (e.mode, e.mtime, ino)
        self.stats.dirs += 1

    def _mode(self, e: TarEntry) -> int:
        if e.mode & _SETID and not self.privileges.setid:
            self.stats.stripped_setid += 1
            return e.mode & ~_SETID
        return e.mode

    def _regular(self, parent: int, base: bytes, e: TarEntry, reader: TarReader) -> None:
        fd = os.open(base, _NEW_FILE, 0o600, dir_fd=parent)
        try:
            if e.size:
                self.stats.data_bytes += reader.copy_data(lambda mv: _write_all(fd, mv))
            self._chown(fd, e)
            self._set_xattrs(fd, e, user_ok=True)
            os.fchmod(fd, self._mode(e))
            os.utime(fd, ns=_ns(e.mtime))
        finally:
            os.close(fd)
        self.stats.files += 1

    def _special(self, parent: int, base: bytes, e: TarEntry) -> bool:
        if e.type == tf.FIFO:
            os.mkfifo(base, 0o600, dir_fd=parent)
            self.stats.fifos += 1
        elif not self.privileges.devices:
            self.stats.dropped_devices += 1
            return False
        else:
            kind = stat.S_IFCHR if e.type == tf.CHR else stat.S_IFBLK
            try:
                device = os.makedev(e.devmajor, e.devminor)
            except (OverflowError, ValueError):
                raise LayerError(f"device {shown_name(e.name)} has an invalid number "
                                 f"{e.devmajor}:{e.devminor}") from None
            try:
                # By path (through /proc's handle on `parent`): os.mknod's plain signature.
                os.mknod(self.main.path_of(base), kind | 0o600, device)
            except PermissionError:
                # Real devices cannot be created inside a user namespace.
                self.stats.skipped_devices += 1
                self.stats.warn(f"skipped device {os.fsdecode(e.name)}: mknod not permitted")
                return False
            self.stats.devices += 1
        self._metadata((parent, base), e)
        self._chmod_at(parent, base, self._mode(e))
        return True

    def _chmod_at(self, parent: int, base: bytes, mode: int) -> None:
        try:
            os.chmod(base, mode, dir_fd=parent, follow_symlinks=False)
        except (NotImplementedError, OSError) as err:
            # glibc does a no-follow chmod through /proc; without it, a path this applier
            # resolved and created a moment ago.
            if isinstance(err, OSError) and err.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.chmod(self.main.path_of(base), mode)

    def _hardlink(self, parent: int, base: bytes, key: bytes, e: TarEntry) -> None:
        tparts = _clean(e.linkname)

        def target() -> tuple[int, bytes] | None:
            if not tparts:
                return None
            tparent = self.side.resolve(tparts[:-1], create=False)
            if tparent is None:
                return None
            tst = _lstat(tparent, tparts[-1])
            if tst is None or stat.S_ISDIR(tst.st_mode):
                return None
            return tparent, tparts[-1]

        def refuse() -> LayerError:
            return LayerError(
                f"hard link {os.fsdecode(e.name)!r} -> {os.fsdecode(e.linkname)!r}: "
                "target is not a file earlier in this layer"
            )

        found = target()
        if found is None:
            raise refuse()
        names = self.side.names
        if (b"/".join((*names, found[1])) if names else found[1]) == key:
            return
        st = _lstat(parent, base)
        if st is not None:
            self._remove(parent, base, st)
            found = target()  # the removal may have reset (or removed) the target's dir
            if found is None:
                raise refuse()
        os.link(found[1], base, src_dir_fd=found[0], dst_dir_fd=parent, follow_symlinks=False)
        self.stats.hardlinks += 1

    def _whiteout(self, parent_parts: list[bytes], base: bytes) -> None:
        if base == _WH_OPQ:
            self.stats.opaques += 1
            if self.overlay:
                d = self._parent(parent_parts, create=True)
                assert d is not None
                fd = read_dir_fd(d, b".")
                try:
                    self._set_opaque(fd, self.main.key)
                finally:
                    os.close(fd)
            else:
                d = self._parent(parent_parts, create=False)
                if d is not None:
                    self._clear_opaque(d, self.main.key)
                    self.side.reset()
            return
        if base.startswith(_WH_META):
            self.stats.warn(f"ignored whiteout metadata entry {os.fsdecode(base)}")
            return
        name = base[len(_WH) :]
        if name in (b"", b".", b".."):
            raise LayerError(f"invalid whiteout name {os.fsdecode(base)!r}")
        self.stats.whiteouts += 1
        d = self._parent(parent_parts, create=self.overlay)
        if d is None:
            return  # flattening: nothing below to delete
        if self._key(name) in self.unpacked:
            return  # whiteouts only hide lower layers, never this one
        st = _lstat(d, name)
        if st is not None:
            self._remove(d, name, st)
        if self.overlay:
            try:
                os.mknod(self.main.path_of(name), stat.S_IFCHR, os.makedev(0, 0))
            except PermissionError:
                raise LayerError(
                    "cannot create an overlay whiteout (0/0 character device); "
                    "this kernel does not allow it here"
                ) from None

    def _clear_opaque(self, d: int, dkey: bytes) -> None:
        """Flattening: drop every child of `d` this layer did not write."""
        fd = read_dir_fd(d, b".")
        try:
            for text in os.listdir(fd):
                name = os.fsencode(text)
                key = dkey + b"/" + name if dkey else name
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if key in self.unpacked:
                    if stat.S_ISDIR(st.st_mode):
                        sub = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                        try:
                            self._clear_opaque(sub, key)
                        finally:
                            os.close(sub)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    remove_tree(fd, name)
                else:
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    # -- metadata ---------------------------------------------------------------

    def _metadata(self, target: tuple[int, bytes], e: TarEntry) -> None:
        """Owner, xattrs and mtime of a symlink, device or fifo (never followed)."""
        self._chown(target, e)
        self._set_xattrs(target, e, user_ok=False)
        parent, base = target
        os.utime(base, ns=_ns(e.mtime), dir_fd=parent, follow_symlinks=False)

    def _chown(self, target: _Target, e: TarEntry) -> None:
        try:
            if isinstance(target, int):
                os.fchown(target, e.uid, e.gid)
            else:
                os.chown(target[1], e.uid, e.gid, dir_fd=target[0], follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EINVAL):
                raise
            # EINVAL: the id is not mapped in this user namespace.
            self.stats.chown_failures += 1
            self.stats.warn(
                f"cannot chown {os.fsdecode(e.name)} to {e.uid}:{e.gid}: {err.strerror}"
            )

    def _set_xattrs(self, target: _Target, e: TarEntry, *, user_ok: bool) -> None:
        for name, value in e.xattrs.items():
            if is_overlay_xattr(name):
                # A layer must not smuggle overlay bookkeeping into a lowerdir.
                self.stats.skipped_xattrs += 1
                self.stats.warn(f"dropped {name} on {os.fsdecode(e.name)}")
                continue
            if name == CAPABILITY and not self.privileges.capabilities:
                self.stats.dropped_capabilities += 1
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    assert target[0] == self.main.top
                    os.setxattr(self.main.path_of(target[1]), name, value, follow_symlinks=False)
            except OSError as err:
                privileged = name.startswith(("security.", "trusted."))
                unsupported = err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
                denied = err.errno in (errno.EPERM, errno.EACCES) and (privileged or not user_ok)
                if not (unsupported or denied):
                    raise LayerError(
                        f"cannot set {name} on {os.fsdecode(e.name)}: {err}"
                    ) from None
                self.stats.skipped_xattrs += 1
                self.stats.warn(f"skipped xattr {name} on {os.fsdecode(e.name)}: {err.strerror}")

    def _finish_dirs(self) -> None:
        """Modes and mtimes of directories, set last (a 0555 dir must still take children;
        a child's creation would move its parent's mtime). Each dir is found again from
        the root without following anything: if this layer replaced it, or a parent of
        it, by something else since, it is skipped, never chased."""
        walk = DirStack(self.root_fd, self.main.root_path)
        try:
            # Descending byte order puts every path after all of its descendants.
            for key in sorted(self.dirs, reverse=True):
                mode, mtime, ino = self.dirs[key]
                parts = key.split(b"/") if key else []
                parent = walk.walk_strict(parts[:-1]) if parts else self.root_fd
                if parent is None:
                    continue
                self._finish_dir(parent, parts[-1] if parts else b".", mode, mtime, ino)
        finally:
            walk.close()

    @staticmethod
    def _finish_dir(parent: int, name: bytes, mode: int, mtime: int, ino: int) -> None:
        times = _ns(mtime)
        try:
            fd = read_dir_fd(parent, name)
        except PermissionError:
            st = _lstat(parent, name)
            if st is None or not stat.S_ISDIR(st.st_mode) or st.st_ino != ino:
                return
            os.chmod(name, mode, dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)
            return
        except OSError as err:
            if err.errno in _GONE:
                return
            raise
        try:
            if os.fstat(fd).st_ino == ino:
                os.fchmod(fd, mode)
                os.utime(fd, ns=times)
        finally:
            os.close(fd)


def apply_layer(
    tar_stream: BinaryIO,
    dest: str,
    *,
    overlay_format: bool = True,
    opaque_xattr: str = OPAQUE_XATTR,
    whiteouts: bool = True,
    privileges: FilePrivileges = KEEP_ALL,
    limits: ExpansionLimits = DEFAULT_LIMITS,
    layer: str = "",
) -> ApplyStats:
    """Extract a layer (plain, gzip or zstd; sniffed by magic bytes) into `dest`.

    With `whiteouts=False` the tar is a plain archive (build-context files): a file named
    `.wh.x` is just a file. `privileges` chooses whether devices, set-id bits and file
    capabilities are written; `limits` bounds decompression; `layer` names the layer in
    errors (e.g. "layer sha256:...")."""
    what = layer or "a layer"
    applier = _Applier(
        dest,
        overlay=overlay_format,
        opaque_xattr=opaque_xattr,
        whiteouts=whiteouts,
        privileges=privileges,
        what=what,
    )
    try:
        reader = TarReader(decompressed(tar_stream, limits=limits, what=what))
        return applier.run(reader)
    finally:
        applier.close()


def apply_layer_file(path: str, dest: str, *, overlay_format: bool = True) -> ApplyStats:
    with open(path, "rb") as f:
        return apply_layer(f, dest, overlay_format=overlay_format)

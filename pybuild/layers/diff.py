"""Turn an overlay upper dir (or a plain tree) into a layer tar.

Walk order is containerd's (filepath.Walk): depth first, parents before
children, the names of each directory sorted by their bytes. Inside a
directory the opaque marker comes first, then the whiteouts, then the other
entries, so that whiteouts precede their sibling directories as the OCI
image-spec recommends and streaming appliers see deletions before additions.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from pybuild.layers import tarformat as tf
from pybuild.layers import xattrs as xa
from pybuild.layers.errors import LayerError
from pybuild.layers.tarwriter import LayerWriter

log = logging.getLogger(__name__)

_WH = tf.WHITEOUT_PREFIX.encode()
_WH_META = tf.WHITEOUT_META_PREFIX.encode()
_WH_OPQ = tf.WHITEOUT_OPAQUE.encode()
_FUSE_OPQ_DEV = b".wh..opq"  # fuse-overlayfs' 0/0 device marker inside opaque dirs
# Upper dirs in these states have no faithful tar representation.
_UNSUPPORTED = {
    "user.overlay.redirect": "redirect_dir",
    "trusted.overlay.redirect": "redirect_dir",
    "user.overlay.metacopy": "metacopy",
    "trusted.overlay.metacopy": "metacopy",
}


def _is_whiteout_dev(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


class _Walker:
    def __init__(
        self,
        root: str,
        writer: LayerWriter,
        *,
        upper: bool,
        lower_dirs: Sequence[str] = (),
    ) -> None:
        self.root = os.fsencode(os.path.abspath(root))
        self.writer = writer
        self.upper = upper
        self.lowers = [os.fsencode(d) for d in lower_dirs]

    def run(self) -> None:
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{os.fsdecode(self.root)}: not a directory")
        stack: list[Iterator[tuple[bytes, os.stat_result]]] = [self._dir(b"", st)]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
            else:
                stack.append(self._dir(*child))

    def _dir(self, rel: bytes, st: os.stat_result) -> Iterator[tuple[bytes, os.stat_result]]:
        """Emit directory `rel` and its non-directory children; yield child dirs to descend."""
        path = self.root + b"/" + rel if rel else self.root
        content, overlay = xa.read_split(path)
        self._check_supported(rel, path, overlay)
        names = sorted(os.listdir(path))
        whiteouts: set[bytes] = set()
        entries: list[tuple[bytes, os.stat_result]] = []
        opaque = False
        for name in names:
            cst = os.lstat(path + b"/" + name)
            if not self.upper:
                entries.append((name, cst))
            elif name == _WH_OPQ:
                opaque = True  # fuse-overlayfs keeps a literal marker file
            elif name == _FUSE_OPQ_DEV and _is_whiteout_dev(cst):
                continue
            elif name.startswith(_WH_META):
                log.warning("skipping overlay metadata entry %s", os.fsdecode(_join(rel, name)))
            elif name.startswith(_WH):
                whiteouts.add(name[len(_WH) :])  # fuse-overlayfs' whiteout file fallback
            elif _is_whiteout_dev(cst):
                whiteouts.add(name)
            else:
                entries.append((name, cst))
        if self.upper and not opaque:
            opaque = any(xa.get(path, k) == b"y" for k in xa.OPAQUE_XATTRS if k in overlay)
        if rel:
            self.writer.add_path(os.fsdecode(rel), path, st, xattrs=content)
            if opaque and self._in_lower(rel):
                self.writer.add_opaque(os.fsdecode(rel))
        for name in sorted(whiteouts):
            child = _join(rel, name)
            if self._in_lower(child):
                self.writer.add_whiteout(os.fsdecode(child))
        for name, cst in entries:
            child = _join(rel, name)
            if stat.S_ISDIR(cst.st_mode):
                yield child, cst
                continue
            cpath = self.root + b"/" + child
            ccontent, coverlay = xa.read_split(cpath)
            self._check_supported(child, cpath, coverlay)
            self.writer.add_path(os.fsdecode(child), cpath, cst, xattrs=ccontent)

    def _check_supported(self, rel: bytes, path: bytes, overlay: list[str]) -> None:
        if not self.upper:
            return
        for name in overlay:
            feature = _UNSUPPORTED.get(name)
            if feature is not None:
                raise LayerError(
                    f"{os.fsdecode(rel) or '/'}: overlay {feature} is in use in the upper dir; "
                    "pybuild cannot diff it (mount the overlay with userxattr or "
                    "redirect_dir=off,metacopy=off)"
                )

    def _in_lower(self, rel: bytes) -> bool:
        """Whether `rel` may exist below; True when no lower dirs were given."""
        if not self.lowers:
            return True
        return any(_exists_below(lower, rel) for lower in self.lowers)


def _exists_below(lower: bytes, rel: bytes) -> bool:
    """lstat `rel` under `lower` without following symlinks in its parents."""
    current = lower
    parts = rel.split(b"/")
    for i, part in enumerate(parts):
        current = current + b"/" + part
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return False
        if _is_whiteout_dev(st):
            return False
    return True


def write_diff_from_upper(
    upper: str,
    out: BinaryIO,
    *,
    mtime: int | None = None,
    lower_dirs: Sequence[str] = (),
) -> None:
    """Write the layer tar for an overlay upper dir.

    0/0 character devices become `.wh.<name>` whiteouts, opaque dirs get a
    `.wh..wh..opq` marker, and overlay bookkeeping xattrs are dropped. If
    `lower_dirs` is given, whiteouts and opaque markers for paths that exist
    in none of them are left out (they would hide nothing).
    """
    writer = LayerWriter(out, mtime=mtime)
    _Walker(upper, writer, upper=True, lower_dirs=lower_dirs).run()
    writer.close()


def write_tree(root: str, out: BinaryIO, *, mtime: int | None = None) -> None:
    """Write a full layer of a plain directory (the root itself is not an entry)."""
    writer = LayerWriter(out, mtime=mtime)
    _Walker(root, writer, upper=False).run()
    writer.close()

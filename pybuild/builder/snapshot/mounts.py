"""The three snapshotters and the probe that picks one (runs inside the sandbox daemon)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pybuild.builder.executor.daemon.cleanup import rmtree
from pybuild.builder.executor.daemon.linux import MS_RDONLY, mount, umount
from pybuild.errors import UserError
from pybuild.layers.xattrs import OPAQUE_XATTR

SNAPSHOTTERS = ("overlay", "fuse-overlayfs", "copy")
ENV_VAR = "PYBUILD_SNAPSHOTTER"



def distinct_lowers(lowers: Iterable[str]) -> list[str]:
    """Lower dirs (top first) with only the topmost of each repeated one: overlayfs
    refuses a lowerdir given twice (ELOOP), and a chain can hold one snapshot twice (two
    byte-identical layers, A,B,A, an image that repeats its empty layer). Dropping the
    lower copies changes nothing: the topmost has every path of the others, with the
    same whiteouts and opaque marks."""
    return list(dict.fromkeys(lowers))


def mount_lowers(target: str, lowers: Iterable[str], empty: str) -> None:
    """A read-only overlay of `lowers` (top first) at `target`; `empty` is an empty dir
    to stack under them (an overlay needs two lowers without an upper)."""
    os.makedirs(empty, exist_ok=True)
    opt = "lowerdir=" + ":".join([*distinct_lowers(lowers), empty])
    mount("overlay", target, "overlay", MS_RDONLY, opt)


@dataclass(slots=True)
class MountedRoot:
    """A step's root: `merged` is what the step sees; `upper` receives its changes
    (overlay format) once the root is released. `lowers` are top first, each once."""

    step_dir: str
    merged: str
    upper: str
    work: str
    lowers: list[str]
    mounted: bool = False

    def __post_init__(self) -> None:
        self.lowers = distinct_lowers(self.lowers)


class Snapshotter(Protocol):
    name: str

    def mount(self, root: MountedRoot) -> None: ...

    def release(self, root: MountedRoot) -> None: ...


def _lower_option(lowers: list[str], step_dir: str) -> str:
    if not lowers:
        empty = os.path.join(step_dir, "empty")
        os.makedirs(empty, exist_ok=True)
        lowers = [empty]
    return "lowerdir=" + ":".join(lowers)


class OverlaySnapshotter:
    name = "overlay"

    def mount(self, root: MountedRoot) -> None:
        lowers = root.lowers or [os.path.join(root.step_dir, "empty")]
        if not root.lowers:
            os.makedirs(lowers[0], exist_ok=True)
        tail = f"upperdir={root.upper},workdir={root.work},userxattr"
        common = os.path.dirname(lowers[0])
        if len(lowers) > 1 and all(os.path.dirname(x) == common for x in lowers):
            # Relative lowerdir paths keep the option string short (a page at most).
            cwd = os.getcwd()
            os.chdir(common)
            try:
                opts = "lowerdir=" + ":".join(os.path.basename(x) for x in lowers)
                mount("overlay", root.merged, "overlay", 0, f"{opts},{tail}")
            finally:
                os.chdir(cwd)
        else:
            mount("overlay", root.merged, "overlay", 0, f"lowerdir={':'.join(lowers)},{tail}")
        root.mounted = True

    def release(self, root: MountedRoot) -> None:
        if root.mounted:
            umount(root.merged)
            root.mounted = False


class FuseOverlaySnapshotter:
    name = "fuse-overlayfs"

    def mount(self, root: MountedRoot) -> None:
        binary = shutil.which("fuse-overlayfs")
        if binary is None:
            raise UserError("fuse-overlayfs is not installed")
        opts = (f"{_lower_option(root.lowers, root.step_dir)},upperdir={root.upper},"
                f"workdir={root.work}")
        proc = subprocess.run([binary, "-o", opts, root.merged], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise UserError(f"fuse-overlayfs failed: {proc.stderr.strip()}")
        root.mounted = True

    def release(self, root: MountedRoot) -> None:
        if root.mounted:
            try:
                umount(root.merged, 0)  # synchronous: the upper is complete afterwards
            except OSError:
                umount(root.merged)
            root.mounted = False


_Key = tuple[int, int, int]


class CopySnapshotter:
    """No mounts: lowers are copied into `merged`; on release the changes are found by
    comparing with the inode/ctime record taken after the copy, and written to `upper`
    (unchanged entries are hard links of merged's inodes, whiteouts are 0/0 devices)."""

    name = "copy"

    def __init__(self) -> None:
        self._before: dict[str, dict[str, _Key]] = {}

    def mount(self, root: MountedRoot) -> None:
        for lower in reversed(root.lowers):
            _apply_lower(lower, root.merged)
        self._before[root.merged] = _record(root.merged)
        root.mounted = True

    def release(self, root: MountedRoot) -> None:
        if not root.mounted:
            return
        before = self._before.pop(root.merged, {})
        _diff_to_upper(root.merged, before, root.upper)
        rmtree(root.merged)
        os.makedirs(root.merged, exist_ok=True)
        root.mounted = False


def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name in _xattrs(src):
        if name.startswith(("user.overlay.", "trusted.overlay.")) or name == _ORIGINAL_XATTR:
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _apply_lower(src_root: str, dst_root: str) -> None:
    """Copy one snapshot (overlay lower format) over `dst_root`, honouring its whiteouts
    and opaque dirs."""
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        dst_dir = dst_root if rel == "." else os.path.join(dst_root, rel)
        if rel != ".":
            try:
                opaque = os.getxattr(dirpath, OPAQUE_XATTR, follow_symlinks=False) == b"y"
            except OSError:
                opaque = False
            if os.path.lexists(dst_dir) and (opaque or not os.path.isdir(dst_dir)
                                             or os.path.islink(dst_dir)):
                rmtree(dst_dir)
            if not os.path.lexists(dst_dir):
                os.mkdir(dst_dir, 0o700)
            dirs.append((dirpath, dst_dir, os.lstat(dirpath)))
        names = list(filenames)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                names.append(d)
        for d in list(dirnames):
            if _is_whiteout(os.lstat(os.path.join(dirpath, d))):
                dirnames.remove(d)
                names.append(d)
        for name in names:
            src = os.path.join(dirpath, name)
            dst = os.path.join(dst_dir, name)
            st = os.lstat(src)
            if os.path.lexists(dst):
                rmtree(dst)
            if _is_whiteout(st):
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], dst, follow_symlinks=False)
                continue
            if stat.S_ISREG(st.st_mode):
                shutil.copyfile(src, dst, follow_symlinks=False)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISSOCK(st.st_mode):
                continue
            else:
                os.mknod(dst, st.st_mode, st.st_rdev)
            _copy_meta(src, dst, st)
            if st.st_nlink > 1:
                links[key] = dst
    for src, dst, st in reversed(dirs):
        _copy_meta(src, dst, st)
    if os.path.isdir(src_root):
        _copy_meta(src_root, dst_root, os.lstat(src_root))


def _key(st: os.stat_result) -> _Key:
    return (st.st_ino, st.st_ctime_ns, st.st_mode)


# Set on every directory of a copied rootfs: a directory without it after the step was
# made by the step, even when it got the inode number of one it removed (ext4 reuses them
# at once, so `rm -rf d && mkdir d` can keep the number).
_ORIGINAL_XATTR = "user.pybuild.original"


def _record(root: str) -> dict[str, _Key]:
    out: dict[str, _Key] = {}
    with contextlib.suppress(OSError):  # the root's mark says marking works here
        os.setxattr(root, _ORIGINAL_XATTR, b"1")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.setxattr(os.path.join(dirpath, name), _ORIGINAL_XATTR, b"1",
                            follow_symlinks=False)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = _key(os.lstat(p))
    return out


def _is_original(path: str) -> bool:
    try:
        return os.getxattr(path, _ORIGINAL_XATTR, follow_symlinks=False) == b"1"
    except OSError:
        return False


def _diff_to_upper(merged: str, before: dict[str, _Key], upper: str) -> None:
    """Write what changed in `merged` since `before` as an overlay upper dir."""
    seen: set[str] = set()
    upper_dirs: list[tuple[str, str]] = []

    def ensure_parent(rel: str) -> None:
        parent = os.path.dirname(rel)
        if not parent or os.path.isdir(os.path.join(upper, parent)):
            return
        ensure_parent(parent)
        dst = os.path.join(upper, parent)
        os.mkdir(dst, 0o700)
        upper_dirs.append((os.path.join(merged, parent), dst))

    opaque: set[str] = set()
    marked = _is_original(merged)
    for dirpath, dirnames, filenames in os.walk(merged):
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                filenames.append(d)
        for name in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, merged)
            seen.add(rel)
            st = os.lstat(p)
            old = before.get(rel)
            under_opaque = any(rel.startswith(o + "/") for o in opaque)
            if old == _key(st) and not under_opaque:
                continue
            ensure_parent(rel)
            dst = os.path.join(upper, rel)
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(dst):
                    os.mkdir(dst, 0o700)
                    upper_dirs.append((p, dst))
                replaced = old is not None and (
                    old[0] != st.st_ino or (marked and not _is_original(p)))
                if replaced and not under_opaque:
                    opaque.add(rel)  # replaced by a new directory: hides everything below
                    os.setxattr(dst, OPAQUE_XATTR, b"y")
            else:
                os.link(p, dst, follow_symlinks=False)
    gone = sorted(set(before) - seen)
    removed: list[str] = []
    for rel in gone:
        if any(rel.startswith(r + "/") for r in removed) or any(
                rel.startswith(o + "/") for o in opaque):
            continue
        removed.append(rel)
        ensure_parent(rel)
        os.mknod(os.path.join(upper, rel), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    for src, dst in reversed(upper_dirs):
        _copy_meta(src, dst, os.lstat(src))


def _fuse_usable() -> str | None:
    if shutil.which("fuse-overlayfs") is None:
        return "fuse-overlayfs is not installed"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as exc:
        return f"/dev/fuse is not usable ({exc.strerror}; an admin can `chmod 0666 /dev/fuse`)"
    os.close(fd)
    return None


def _try(snap: Snapshotter, scratch: str) -> str | None:
    """Mount a one-lower root with `snap`, write through it, release it; None if it works."""
    root = MountedRoot(step_dir=scratch, merged=os.path.join(scratch, "m"),
                       upper=os.path.join(scratch, "u"), work=os.path.join(scratch, "w"),
                       lowers=[os.path.join(scratch, "l")])
    try:
        for d in (root.merged, root.upper, root.work, *root.lowers):
            os.makedirs(d, exist_ok=True)
        os.makedirs(os.path.join(root.lowers[0], "d"), exist_ok=True)
        snap.mount(root)
        try:
            rmtree(os.path.join(root.merged, "d"))
            os.mkdir(os.path.join(root.merged, "d"))
        finally:
            snap.release(root)
        return None
    except (OSError, UserError) as exc:
        return str(exc)
    finally:
        rmtree(scratch)


def make_snapshotter(name: str) -> Snapshotter:
    if name == "overlay":
        return OverlaySnapshotter()
    if name == "fuse-overlayfs":
        return FuseOverlaySnapshotter()
    if name == "copy":
        return CopySnapshotter()
    raise UserError(f"unknown snapshotter {name!r} (use one of {', '.join(SNAPSHOTTERS)})")


def probe(scratch: str, forced: str = "") -> tuple[str, str]:
    """Pick a snapshotter: `forced` (PYBUILD_SNAPSHOTTER) if given and it works, else the
    first that works of overlay, fuse-overlayfs, copy. Returns (name, why not better)."""
    if forced:
        snap = make_snapshotter(forced)
        why = _fuse_usable() if forced == "fuse-overlayfs" else None
        why = why or _try(snap, scratch)
        if why is not None:
            raise UserError(f"{ENV_VAR}={forced} is not usable here: {why}")
        return forced, f"forced by {ENV_VAR}"
    reasons = []
    why = _try(OverlaySnapshotter(), scratch)
    if why is None:
        return "overlay", ""
    reasons.append(f"kernel overlay: {why}")
    why = _fuse_usable() or _try(FuseOverlaySnapshotter(), scratch)
    if why is None:
        return "fuse-overlayfs", "; ".join(reasons)
    reasons.append(f"fuse-overlayfs: {why}")
    return "copy", "; ".join(reasons)


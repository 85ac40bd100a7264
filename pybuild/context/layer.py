"""`COPY dir/ /new/dest/` from the build context straight into a layer blob.

The general way to run a COPY is to extract the context files onto an overlay of the
base and diff its upper dir: every byte is written twice and read three times. When the
destination does not exist in the base yet, the upper dir is fully predictable: the
destination's parent chain as overlayfs copies it up (each directory with its lower
metadata; the direct parent gets a new mtime since an entry was created in it), a fresh
0755 root-owned destination directory, and the context files owned by 0:0. That layer is
written here in one pass over the context, in the differ's walk order (depth first, the
names of each directory sorted by their bytes), so it is the layer the general way
produces. The snapshot is left to be unpacked only if a later step needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

from pybuild.content.store import ContentStore
from pybuild.context.statcache import StatCache
from pybuild.context.tree import ContextEntry, below, owned_by_root
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.layers import xattrs as xa
from pybuild.layers.compress import CompressingWriter
from pybuild.layers.tarwriter import LayerWriter


class ParentDir(Protocol):
    """An existing parent of the destination, as the sandbox saw it in the lowers."""

    @property
    def mode(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def xattrs(self) -> Any: ...  # (name, value) pairs

_IN_MEMORY = 8 << 20  # bigger files are streamed (and hashed for the cache separately)


@dataclass(frozen=True, slots=True)
class ContextLayer:
    digest: Digest  # the blob is the plain tar, so this is also the diff_id
    size: int


def layout(entries: Sequence[ContextEntry], prefix: str) -> list[tuple[str, ContextEntry]] | None:
    """The entries below `prefix` (paths relative to it) in the differ's walk order; None
    when the general way must run: a file type a copy treats specially, or an entry
    whose parent directory is not itself selected (a .dockerignore exception)."""
    children: dict[str, list[tuple[bytes, str, ContextEntry]]] = {}
    dirs = {""}
    for e in entries:
        found = below(e.rel, prefix)
        if found is None:
            continue
        rel = found
        mode = e.st.st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            return None
        if stat.S_ISDIR(mode):
            dirs.add(rel)
        parent, _, name = rel.rpartition("/")
        children.setdefault(parent, []).append((os.fsencode(name), rel, e))
    if any(parent not in dirs for parent in children):
        return None
    for kids in children.values():
        kids.sort(key=lambda k: k[0], reverse=True)  # popped from the end: by name
    ordered: list[tuple[str, ContextEntry]] = []
    stack = [children.get("", [])]
    while stack:
        if not stack[-1]:
            stack.pop()
            continue
        _, rel, e = stack[-1].pop()
        ordered.append((rel, e))
        if stat.S_ISDIR(e.st.st_mode):
            stack.append(children.get(rel, []))  # a directory's contents come right after it
    return ordered


def _unreadable(path: str, exc: OSError) -> UserError:
    return UserError(f"cannot read {path}: {exc.strerror}", code="context-unreadable")


def _read(path: str, size: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        data = os.read(fd, size + 1)  # one byte more: a file that grew is noticed
        while len(data) < size and (more := os.read(fd, size - len(data) + 1)):
            data += more
    finally:
        os.close(fd)
    if len(data) != size:
        raise UserError(f"{path}: changed while the build was reading it")
    return data


def write_context_layer(store: ContentStore, ordered: list[tuple[str, ContextEntry]],
                        dest: str, parents: Sequence[ParentDir], epoch: int | None,
                        stat_cache: StatCache | None = None) -> ContextLayer:
    """Write the layer of a COPY into the new directory `dest` (absolute, normalised)
    whose existing ancestors below / are described by `parents` (from the sandbox's
    probe_path, outermost first). With `stat_cache`, the digests of the files read are
    recorded in it."""
    now_ns = time.time_ns()
    names = [p for p in dest.split("/") if p]
    fd, tmp = store.temp_file("ctx-layer")  # named for this process (see content.store)
    os.close(fd)
    try:
        # "w+b" and a plain sink: big files are copied in-kernel and the blob is hashed
        # back from the file, with windowed writeback (see layers/hashsink.py).
        with open(tmp, "w+b") as out:
            sink = CompressingWriter(out, "none")
            try:
                _write_entries(LayerWriter(sink, mtime=epoch),  # type: ignore[arg-type]
                               names, ordered, parents, now_ns, stat_cache)
            except BaseException:
                sink.abort()
                raise
            result = sink.result()
        digest = store.ingest_file(tmp, result.digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return ContextLayer(digest=digest, size=result.size)


def _dir_stat(mode: int, uid: int, gid: int, mtime_ns: int) -> Any:
    """The stat LayerWriter needs for a directory entry that has no file behind it."""
    return SimpleNamespace(st_mode=mode, st_uid=uid, st_gid=gid, st_size=0, st_nlink=1,
                           st_ino=0, st_dev=0, st_rdev=0, st_mtime_ns=mtime_ns)


def _write_entries(writer: LayerWriter, names: list[str],
                   ordered: list[tuple[str, ContextEntry]], parents: Sequence[ParentDir],
                   now_ns: int, stat_cache: StatCache | None) -> None:
    for depth, meta in enumerate(parents):
        last = depth == len(parents) - 1
        writer.add_path("/".join(names[:depth + 1]), b"", _dir_stat(
            meta.mode, meta.uid, meta.gid, now_ns if last else meta.mtime_ns),
            xattrs=dict(meta.xattrs))
    top = "/".join(names)
    writer.add_path(top, b"", _dir_stat(stat.S_IFDIR | 0o755, 0, 0, now_ns), xattrs={})
    for rel, e in ordered:
        st = e.st
        if (stat_cache is None or not stat.S_ISREG(st.st_mode) or st.st_nlink > 1
                or st.st_size > _IN_MEMORY):
            try:
                writer.add_path(f"{top}/{rel}", e.path, owned_by_root(st))
            except OSError as exc:
                if exc.filename != e.path:
                    raise  # not the context file: the layer being written
                raise _unreadable(e.path, exc) from None
            continue
        # Read once: the content goes into the layer and its digest into the stat
        # cache, so the cache key that follows does not read the file again.
        data = _read(e.path, st.st_size)
        stat_cache.record(e.path, st, hashlib.sha256(data).hexdigest())
        writer.add_bytes(f"{top}/{rel}", data, mode=st.st_mode, uid=0, gid=0,
                         mtime=st.st_mtime_ns // 1_000_000_000,
                         xattrs=xa.read_content(e.path))
    writer.close()

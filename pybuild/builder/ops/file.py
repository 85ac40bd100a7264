"""FileOp (COPY, ADD, WORKDIR, heredoc files): the actions as the executor takes them, with
context files sent as tars, and one shortcut: `COPY dir/ /new-dest/` from a context writes
its layer straight from the context files (see `context/layer.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pybuild.builder.cachekey import CacheMap
from pybuild.builder.contexts import file_digests, select, write_context_tar
from pybuild.builder.events import Notice, VertexDone, VertexStarted
from pybuild.builder.ops.base import OpContext
from pybuild.builder.protocols import (
    CopyFiles,
    FileAction,
    FileStep,
    FromLowers,
    FromTar,
    MakeDir,
    MakeFile,
    Owner,
    replace,
)
from pybuild.builder.result import LayerRef, Solved
from pybuild.context.patterns import is_literal_path
from pybuild.context.tree import BuildContext, ContextEntry
from pybuild.digest import Digest
from pybuild.llb import CopyAction, FileOp, MkdirAction, MkfileAction
from pybuild.oci import mediatypes

# Below this many files a context COPY is cheap to read twice; above it, reading once pays.
PREWRITE_MIN_FILES = 64
# Up to this many files a record keeps each one's digest (to name what changed).
_LISTED_FILES = 2000


@dataclass(slots=True, kw_only=True)
class Prepared:
    """What computing a FileOp's key found, for running it: each context copy's selection
    (by action index), and a layer written ahead of the key (see `_prewrite`)."""

    selections: dict[int, list[ContextEntry]]
    prewritten: Solved | None = None


class FileHandler:
    commits = True  # its result is a new layer (SOURCE_DATE_EPOCH sets its times)

    def __init__(self, ctx: OpContext) -> None:
        self.ctx = ctx

    async def cache_map(self, digest: Digest, op: FileOp, inputs: Sequence[Solved]) -> CacheMap:
        """The content of the context files each copy takes is part of the key."""
        prepared = Prepared(selections={})
        prepared.prewritten = await self._prewrite(digest, op, inputs, prepared)
        content, lists = [], {}
        for i, action in enumerate(op.actions):
            if not isinstance(action, CopyAction):
                continue
            local = self.ctx.contexts.of(action.source.op)
            if local is None:
                continue
            entries = prepared.selections.get(i)
            if entries is None:
                entries = prepared.selections[i] = await asyncio.to_thread(
                    select, local, action)
            content.append((str(i), await asyncio.to_thread(local.digest, entries)))
            if len(entries) <= _LISTED_FILES:
                lists[str(i)] = await asyncio.to_thread(file_digests, local, entries)
        return CacheMap(content=tuple(content), file_lists=lists, prepared=prepared)

    async def execute(self, digest: Digest, op: FileOp, name: str, inputs: Sequence[Solved],
                      cmap: CacheMap) -> Solved:
        ctx = self.ctx
        prepared = cmap.prepared if isinstance(cmap.prepared, Prepared) else Prepared(
            selections={})
        by_op = {i.op: s for i, s in zip(op.inputs(), inputs, strict=True)}
        base = by_op[op.base.op] if op.base is not None else Solved(layers=())
        direct = prepared.prewritten
        if direct is None and 0 in prepared.selections:
            direct = await self._context_layer(op, base, prepared.selections[0])
        if direct is not None:
            return direct
        lowers = await ctx.layers.ensure(base)
        actions: list[FileAction] = []
        try:
            for i, action in enumerate(op.actions):
                actions.append(await self._action(action, prepared.selections.get(i), by_op))
            step_dir = ctx.space.step_dir(digest.hex[:12])
            done = await ctx.executor.apply_files(
                FileStep(step_dir=step_dir, lowers=tuple(lowers), actions=tuple(actions)))
        finally:
            for a in actions:
                if isinstance(a, CopyFiles) and isinstance(a.source, FromTar):
                    with contextlib.suppress(OSError):
                        os.unlink(a.source.tar)
            ctx.notices()
        for warning in done.warnings:
            ctx.events(Notice(f"{name}: {warning}", level="warning"))
        return await ctx.layers.commit(step_dir, base, lowers)

    async def _action(self, action: MkdirAction | MkfileAction | CopyAction,
                      selection: list[ContextEntry] | None,
                      by_op: dict[Digest, Solved]) -> FileAction:
        owner = Owner(user=action.chown.user, group=action.chown.group) if action.chown \
            else None
        match action:
            case MkdirAction():
                return MakeDir(path=action.path, mode=action.mode, owner=owner)
            case MkfileAction():
                return MakeFile(path=action.path, data=action.data, mode=action.mode,
                                owner=owner)
        copy = CopyFiles(
            source=FromLowers(lowers=()), sources=action.sources, dest=action.dest,
            dest_is_dir=action.dest_is_dir, owner=owner, chmod=action.chmod,
            exclude=action.exclude, include_patterns=action.include_patterns,
            required_paths=action.required_paths, unpack=action.unpack)
        local = self.ctx.contexts.of(action.source.op)
        if selection is None or local is None:
            lowers = await self.ctx.layers.ensure(by_op[action.source.op])
            return replace(copy, source=FromLowers(lowers=tuple(lowers)))
        tar = self.ctx.space.scratch_file("ctx", ".tar")
        prefix = direct_copy_prefix(local, action, owner)
        await asyncio.to_thread(write_context_tar, local, selection, tar, prefix or "")
        copy = replace(copy, source=FromTar(tar=tar), exclude=())  # (applied when selecting)
        if prefix is not None:
            # One directory's contents, no owner/mode rewriting: the tar is rooted at it and
            # may be extracted straight onto the rootfs.
            copy = replace(copy, source=FromTar(tar=tar, direct=True), sources=("/",),
                           dest_is_dir=True)
        return copy

    # -- the context-layer shortcut ------------------------------------------------------

    def _shortcut(self, op: FileOp) -> tuple[CopyAction, BuildContext, str, str] | None:
        """(action, context, source dir in the context, destination) of a FileOp that is
        one `COPY dir/ /dest/` from a context; None for anything else."""
        if len(op.actions) != 1 or self.ctx.space.compression != "none":
            return None
        action = op.actions[0]
        if not isinstance(action, CopyAction) or action.chown:
            return None
        local = self.ctx.contexts.of(action.source.op)
        if local is None:
            return None
        prefix = direct_copy_prefix(local, action, None)
        dest = os.path.normpath("/" + action.dest.strip("/"))
        if prefix is None or dest == "/":
            return None
        return action, local, prefix, dest

    async def _context_layer(self, op: FileOp, base: Solved, entries: list[ContextEntry],
                             record_digests: bool = False) -> Solved | None:
        """`COPY dir/ /dest/` into a destination the base does not have: the layer written
        straight from the context; None when the general way must run."""
        from pybuild.context import layer as context_layer

        ctx = self.ctx
        found = self._shortcut(op)
        if found is None or not ctx.executor.capabilities.probe_path:
            return None
        _, local, prefix, dest = found
        ordered = context_layer.layout(entries, prefix)
        if ordered is None:
            return None
        lowers = await ctx.layers.ensure(base)
        probe = await ctx.executor.probe_path(lowers, dest)
        chain = probe.chain
        if (not probe.missing or len(chain) != dest.count("/") - 1
                or not all(stat.S_ISDIR(m.mode) for m in chain)):
            return None  # the destination exists, or a parent is missing or a symlink
        layer = await asyncio.to_thread(
            context_layer.write_context_layer, ctx.store, ordered, dest, chain,
            ctx.space.source_date_epoch, local.stat_cache if record_digests else None)
        ref = LayerRef(digest=layer.digest, diff_id=layer.digest, size=layer.size,
                       media_type=mediatypes.OCI_LAYER)
        return Solved(layers=(*base.layers, ref), created=time.time())

    async def _prewrite(self, digest: Digest, op: FileOp, inputs: Sequence[Solved],
                        prepared: Prepared) -> Solved | None:
        """A context COPY whose files the stat cache does not know (a first build, a fresh
        clone) would read every file twice: once for its key, once for its layer. Write
        the layer first, recording the digests in the stat cache on the way, so the key
        costs nothing; it is used if the key misses (it almost always does: the files were
        never seen)."""
        found = self._shortcut(op)
        if found is None:
            return None
        action, local, _, _ = found
        entries = prepared.selections[0] = await asyncio.to_thread(select, local, action)
        # A sample is enough to tell a cold stat cache from a warm one.
        sample = [e for e in entries[::max(1, len(entries) // 64)]
                  if stat.S_ISREG(e.st.st_mode)]
        unknown = sum(1 for e in sample if not local.stat_cache.known(e.path, e.st))
        if len(entries) < PREWRITE_MIN_FILES or unknown * 2 <= len(sample):
            return None
        by_op = {i.op: s for i, s in zip(op.inputs(), inputs, strict=True)}
        base = by_op[op.base.op] if op.base is not None else Solved(layers=())
        # Shown as BuildKit shows its context transfer: a vertex of its own.
        vertex, label = f"context:{digest}", "[internal] load build context"
        self.ctx.events(VertexStarted(digest=vertex, name=label))
        start = time.monotonic()
        solved = await self._context_layer(op, base, entries, record_digests=True)
        self.ctx.events(VertexDone(digest=vertex, name=label,
                                   seconds=time.monotonic() - start))
        return solved


def direct_copy_prefix(local: BuildContext, action: CopyAction,
                       owner: Owner | None) -> str | None:
    """For `COPY dir/ /dest/`-style actions (one plain directory source, no --chown,
    --chmod, --parents or unpacking): the source's path in the context, "" for the root;
    None when the general copy must run."""
    if (len(action.sources) != 1 or owner or action.chmod or action.include_patterns
            or action.required_paths or action.unpack):
        return None
    src = action.sources[0].strip("/")
    if not is_literal_path(src) or ".." in src.split("/"):
        return None
    src = os.path.normpath(src) if src else ""
    src = "" if src == "." else src
    if src and (os.path.islink(os.path.join(local.root, src))
                or not os.path.isdir(os.path.join(local.root, src))):
        return None
    return src

"""The solver: walks a Definition with asyncio, reusing cached results, executing the rest.

One task per op digest, shared by every consumer, so identical work runs once; independent
branches run concurrently; RUN steps are bounded by a semaphore. Each op's cache key is
H(scheme, op digest, input keys, digests of the local files it reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild.builder.context import BuildContext, ContextEntry, StatCache
from pybuild.builder.events import (
    EventSink,
    Notice,
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexLog,
    VertexMiss,
    VertexStarted,
)
from pybuild.builder.protocols import (
    BindFromLowers,
    BindFromTar,
    CacheDir,
    CommitResult,
    CommitSpec,
    Compression,
    CopyFiles,
    ExecStep,
    Executor,
    FileAction,
    FileStep,
    FromLowers,
    FromTar,
    LayerBlob,
    MakeDir,
    MakeFile,
    Owner,
    SecretFile,
    SSHSocket,
    StepMount,
    Tmpfs,
    replace,
)
from pybuild.builder.result import LayerRef, Solved
from pybuild.cache.store import CacheRecord, CacheStore
from pybuild.content.store import ContentStore
from pybuild.content.walk import read_config, read_manifest
from pybuild.digest import Digest
from pybuild.errors import NotFoundError, PybuildError, SourceLocation, StepFailedError, UserError
from pybuild.llb import (
    CopyAction,
    Definition,
    ExecOp,
    FileOp,
    Input,
    MkdirAction,
    MkfileAction,
    Mount,
    OpMetadata,
    SourceOp,
    SSHOpts,
)
from pybuild.oci import mediatypes
from pybuild.oci.descriptor import Descriptor

if TYPE_CHECKING:
    from pybuild.builder.remote_cache import ImportedCache

KEY_SCHEME = "pybuild-cache-v1"
CONTEXT_SOURCE = "local://context"


@dataclass(slots=True)
class SolverOptions:
    root: Path  # the pybuild root
    workdir: Path  # this build's scratch dir (owned by the sandbox namespace)
    snapshots: Path
    compression: Compression = "gzip"
    max_parallelism: int = max(1, os.cpu_count() or 1)
    no_cache: bool = False
    network_default: str = "host"
    source_date_epoch: int | None = None
    cache_root: str = ""
    # --secret: (id, "file" | "value", path or the value); --ssh: (id, socket)
    secrets: tuple[tuple[str, str, str], ...] = ()
    ssh: tuple[tuple[str, str], ...] = ()
    imported_cache: ImportedCache | None = None  # --cache-from records
    http_ca_cert: str = ""  # --ca-cert, trusted for ADD https:// too


class Solver:
    def __init__(self, definition: Definition, *, store: ContentStore, cache: CacheStore,
                 sandbox: Executor, context: BuildContext | None, opts: SolverOptions,
                 events: EventSink) -> None:
        self.defn = definition
        self.store = store
        self.cache = cache
        self.sandbox = sandbox
        self.context = context
        self.opts = opts
        self.events = events
        self._named: dict[Digest, BuildContext] = {}
        self._fetched: dict[Digest, BuildContext] = {}  # ADD <url> / <git>: downloaded dirs
        self._prewritten: dict[Digest, Solved] = {}  # context COPY layers written before keys
        self._tasks: dict[Digest, asyncio.Task[tuple[str, Solved]]] = {}
        self._snapshot_locks: dict[str, asyncio.Lock] = {}
        self._run_sem = asyncio.Semaphore(opts.max_parallelism)
        self._io_sem = asyncio.Semaphore(max(2, opts.max_parallelism))
        self.executed: list[str] = []
        # RUN step name -> seconds to diff and store its layer
        self.layer_seconds: dict[str, float] = {}
        self.misses: dict[str, str] = {}
        self.keys: dict[Digest, str] = {}  # cache key of every RUN/COPY-like op solved

    # -- public -------------------------------------------------------------------------

    async def solve(self) -> Solved:
        if self.defn.output is None:
            return Solved(layers=())
        try:
            _, result = await self._get(self.defn.output.op)
        except BaseException:
            for t in self._tasks.values():
                t.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            raise
        return result

    def export_keys(self, mode: str) -> list[str]:
        """The cache keys `--cache-to` exports: with mode=min those of the steps whose
        layers are in the result (the output's rootfs chain), with max every step's."""
        if mode == "max":
            return list(self.keys.values())
        out: list[str] = []
        digest = self.defn.output.op if self.defn.output is not None else None
        while digest is not None:
            op = self.defn.ops[digest]
            if digest in self.keys:
                out.append(self.keys[digest])
            parent = (op.rootfs if isinstance(op, ExecOp) else
                      op.base if isinstance(op, FileOp) else None)
            digest = parent.op if parent is not None else None
        return out

    # -- scheduling ---------------------------------------------------------------------

    def _get(self, digest: Digest) -> asyncio.Task[tuple[str, Solved]]:
        task = self._tasks.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._solve_op(digest))
            self._tasks[digest] = task
        return task

    def _meta(self, digest: Digest) -> OpMetadata:
        return self.defn.metadata.get(digest, OpMetadata())

    async def _solve_op(self, digest: Digest) -> tuple[str, Solved]:
        op = self.defn.ops[digest]
        meta = self._meta(digest)
        name = meta.description or op.kind
        match op:
            case SourceOp():
                return await self._source(digest, op, name)
            case ExecOp() | FileOp():
                try:
                    inputs = await asyncio.gather(*(self._get(i.op) for i in op.inputs()))
                except PybuildError as exc:
                    # A source fails without a location of its own (a download, a git
                    # fetch): it is reported at the instruction that reads it.
                    raise _located(exc, meta) from None
                return await self._cached_or_run(digest, op, meta, name, list(inputs))
        raise UserError(f"unsupported op {op.kind}")

    async def _source(self, digest: Digest, op: SourceOp, name: str) -> tuple[str, Solved]:
        key = _hash([KEY_SCHEME, str(digest)])
        if op.identifier.startswith("local://"):
            if op.identifier != CONTEXT_SOURCE:  # a named context: its directory must exist
                await asyncio.to_thread(self._context_for, Input(op=digest))
            return key, Solved(layers=(), context=True)
        if op.identifier.startswith(("http://", "https://", "git://")):
            return await self._remote_source(digest, op, name)
        if op.identifier.startswith("oci-layout://"):
            desc, ref = await asyncio.to_thread(self._import_oci_layout, op)
        elif op.identifier.startswith("docker-image://"):
            ref, _, dg = op.identifier.removeprefix("docker-image://").rpartition("@")
            desc = Descriptor(media_type="application/vnd.oci.image.manifest.v1+json",
                              digest=Digest(dg), size=self.store.size(Digest(dg)))
        else:
            raise UserError(f"unsupported source {op.identifier}")
        manifest = await asyncio.to_thread(read_manifest, self.store, desc)
        config = await asyncio.to_thread(read_config, self.store, manifest)
        if len(config.diff_ids) != len(manifest.layers):
            raise UserError(f"image {ref}: config has {len(config.diff_ids)} diff_ids but the "
                            f"manifest has {len(manifest.layers)} layers")
        layers = tuple(
            LayerRef(digest=x.digest, diff_id=d, size=x.size, media_type=x.media_type)
            for x, d in zip(manifest.layers, config.diff_ids, strict=True)
        )
        for layer in layers:
            if not self.store.has(layer.digest):
                raise NotFoundError(f"layer {layer.digest} of image {ref} is not in the "
                                    "content store")
        self.events(VertexCached(digest=str(digest), name=name))
        return key, Solved(layers=layers)

    async def _remote_source(self, digest: Digest, op: SourceOp, name: str) -> tuple[
            str, Solved]:
        """ADD of a URL or a git repository: fetched (or revalidated) by pybuild into a
        directory under `$ROOT/cache/`, then read like a local context. The key is the
        fetched content's identity (content digest, or commit sha), so a changed download
        or commit invalidates the steps that copy it and an unchanged one does not."""
        from pybuild.builder import sources

        attrs = dict(op.attrs)
        cache_root = str(self.opts.root / "cache")
        if op.identifier.startswith("git://"):
            def fetch() -> sources.Fetched:
                return sources.fetch_git(
                    cache_root, attrs.get("git.fullurl", op.identifier),
                    ref=attrs.get("git.ref", ""), subdir=attrs.get("git.subdir", ""),
                    keep_git_dir=attrs.get("git.keepgitdir") == "true",
                    checksum=attrs.get("git.checksum", ""),
                    submodules=attrs.get("git.submodules", "true") != "false")
        else:
            def fetch() -> sources.Fetched:
                return sources.fetch_http(
                    cache_root, op.identifier, filename=attrs.get("http.filename") or
                    "__unnamed__", perm=int(attrs.get("http.perm", "0600"), 8),
                    checksum=attrs.get("http.checksum", ""), refresh=self.opts.no_cache,
                    ca_cert=self.opts.http_ca_cert)
        start = time.monotonic()
        try:
            fetched = await asyncio.to_thread(fetch)
        except PybuildError as exc:
            self.events(VertexFailed(digest=str(digest), name=name, error=exc.message))
            raise
        if fetched.fetched:
            self.events(VertexStarted(digest=str(digest), name=name))
            self.events(VertexDone(digest=str(digest), name=name,
                                   seconds=time.monotonic() - start))
        else:
            self.events(VertexCached(digest=str(digest), name=name))
        cache = self.context.stat_cache if self.context is not None else StatCache(None)
        self._fetched[digest] = BuildContext(fetched.root, None, cache)
        return _hash([KEY_SCHEME, str(digest), fetched.identity]), Solved(layers=(),
                                                                           context=True)

    def _import_oci_layout(self, op: SourceOp) -> tuple[Descriptor, str]:
        """`oci-layout://DIR@DIGEST`: the layout's image is imported into the content store
        (blobs verified) unless the store already has it; an index is resolved for the
        op's platform. Returns the platform manifest's descriptor."""
        from pybuild.content.walk import resolve_platform
        from pybuild.exporters.oci_layout import read_oci_layout
        from pybuild.oci import mediatypes as mt
        from pybuild.oci.platform import Platform, host

        path, _, dg = op.identifier.removeprefix("oci-layout://").rpartition("@")
        if not path or not dg.startswith("sha256:"):
            raise UserError(f"invalid OCI layout source {op.identifier}: want DIR@DIGEST")
        digest = Digest(dg)
        attrs = dict(op.attrs)
        ref = f"oci-layout://{path}@{dg}"
        if not self.store.has(digest):
            top = read_oci_layout(path, self.store, None)
            if not self.store.has(digest):
                raise NotFoundError(f"OCI layout {path} has no image {dg} (its image is "
                                    f"{top.digest})")
        data = self.store.read(digest, what="manifest")
        media_type = json.loads(data).get("mediaType", mt.OCI_MANIFEST)
        desc = Descriptor(media_type=media_type, digest=digest, size=len(data))
        if media_type in mt.INDEX_TYPES:
            platform = Platform.parse(attrs["platform"]) if attrs.get("platform") else host()
            desc = resolve_platform(self.store, desc, platform, name=ref)
        return desc, ref

    def _context_for(self, inp: Input) -> BuildContext | None:
        """The BuildContext a `local://` source reads: the main context, or a named one
        (`--build-context name=DIR`) with its own .dockerignore, as BuildKit's named
        local contexts have; None for other sources."""
        if inp.op in self._fetched:
            return self._fetched[inp.op]
        op = self.defn.ops[inp.op]
        if not isinstance(op, SourceOp) or not op.identifier.startswith("local://"):
            return None
        if op.identifier == CONTEXT_SOURCE:
            if self.context is None:
                raise UserError("this build has no context directory")
            return self.context
        ctx = self._named.get(inp.op)
        if ctx is None:
            ctx = self._named[inp.op] = self._named_context(op)
        return ctx

    def _named_context(self, op: SourceOp) -> BuildContext:
        from pybuild.frontend.dockerignore import PatternMatcher, read_ignore_file

        name = op.identifier.removeprefix("local://")
        path = dict(op.attrs).get("path", "")
        if not path:
            raise UserError(f"named context {name}: no directory given")
        root = os.path.abspath(path)
        if not os.path.isdir(root):
            raise UserError(f"named context {name}: {path} is not a directory")
        patterns: list[str] = []
        try:
            with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
                patterns = read_ignore_file(f.read())
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UserError(f"named context {name}: cannot read .dockerignore: "
                            f"{exc.strerror}") from None
        cache = self.context.stat_cache if self.context is not None else StatCache(None)
        return BuildContext(root, PatternMatcher(patterns) if patterns else None, cache,
                            ignore_file=f"{name}/.dockerignore")

    # -- cache --------------------------------------------------------------------------

    async def _cache_parts(
        self, op: ExecOp | FileOp, inputs: list[tuple[str, Solved]],
        selected: dict[int, list[ContextEntry]],
    ) -> tuple[dict[str, Any], dict[int, list[ContextEntry]]]:
        parts: dict[str, Any] = {"inputs": [k for k, _ in inputs],
                                 "input_names": [self._input_label(i) for i in op.inputs()]}
        selections: dict[int, list[ContextEntry]] = {}
        if isinstance(op, FileOp):
            files: dict[str, str] = {}
            for i, action in enumerate(op.actions):
                if not isinstance(action, CopyAction):
                    continue
                ctx = self._context_for(action.source)
                if ctx is not None:
                    entries = selected.get(i)
                    if entries is None:
                        entries = await asyncio.to_thread(self._select, ctx, action)
                    selections[i] = entries
                    files[str(i)] = await asyncio.to_thread(ctx.digest, entries)
                    if len(entries) <= 2000:
                        parts.setdefault("file_list", {})[str(i)] = await asyncio.to_thread(
                            _file_digests, ctx, entries)
            parts["files"] = files
        if isinstance(op, ExecOp):
            parts["env"] = list(op.env)
            for m in op.mounts:
                ctx = self._context_for(m.input) if m.input is not None else None
                if ctx is not None:
                    entries = await asyncio.to_thread(ctx.select, (m.selector,), ())
                    parts.setdefault("files", {})[m.target] = await asyncio.to_thread(
                        ctx.digest, entries)
        return parts, selections

    def _input_label(self, inp: Input) -> str:
        """How a miss explanation names an input: the step that made it, or the source."""
        op = self.defn.ops[inp.op]
        if isinstance(op, SourceOp):
            ident = op.identifier
            if ident.startswith(("http://", "https://", "git://")):
                from pybuild.builder.sources import redact

                if ident.startswith("git://"):
                    url = dict(op.attrs).get("git.fullurl", ident)
                    return f"the git checkout of {redact(url)}"
                return f"the download {redact(ident)}"
            if ident.startswith("docker-image://"):
                return f"the base image {ident.removeprefix('docker-image://')}"
            return ident
        return self._meta(inp.op).description or "an earlier step"

    @staticmethod
    def _select(ctx: BuildContext, action: CopyAction) -> list[ContextEntry]:
        if action.include_patterns or action.required_paths:
            entries = ctx.select_parents(action.sources, action.include_patterns,
                                         action.required_paths, action.exclude)
        else:
            entries = ctx.select(action.sources, action.exclude)
        for e in entries:
            if e.rel.rpartition("/")[2].startswith(".wh."):
                # A layer cannot hold such a file: every reader takes it for a whiteout.
                raise UserError(
                    f"{e.rel}: a file named .wh.* cannot be copied into an image (OCI "
                    "layers use that name to mark deleted files)",
                    code="copy-whiteout-name",
                    hint="rename it, or leave it out with .dockerignore or --exclude")
        return entries

    def _is_context(self, inp: Input) -> bool:
        op = self.defn.ops[inp.op]
        return isinstance(op, SourceOp) and op.identifier.startswith("local://")

    async def _cached_or_run(self, digest: Digest, op: ExecOp | FileOp, meta: OpMetadata,
                             name: str, inputs: list[tuple[str, Solved]]) -> tuple[str, Solved]:
        try:
            selected = await self._prewrite_context_layer(digest, op, inputs)
            parts, selections = await self._cache_parts(op, inputs, selected)
        except PybuildError as exc:
            raise _located(exc, meta) from None
        parts["op"] = str(digest)
        key = _hash([KEY_SCHEME, str(digest), parts["inputs"], parts.get("files", {})])
        step = f"{meta.filename}|{meta.stage}|{meta.description.split('] ', 1)[0]}"
        ignore = self.opts.no_cache or meta.ignore_cache
        self.keys[digest] = key
        record = None if ignore else self.cache.get(key)
        if record is not None:
            solved = Solved.from_json(record.result)
            if all(self.store.has(x.digest) for x in solved.real_layers):
                self.cache.touch(key)
                self.events(VertexCached(digest=str(digest), name=name))
                return key, solved
        imported = None if ignore else await self._from_imported(key, name)
        if imported is not None:
            self._record(key, step, parts, name, imported)  # local from now on
            self.events(VertexCached(digest=str(digest), name=name))
            return key, imported
        reason = ("--no-cache" if ignore else
                  explain_miss(self.cache.latest_for_step(step), parts, meta))
        self.misses[name] = reason
        self.events(VertexMiss(digest=str(digest), name=name, reason=reason))
        self.events(VertexStarted(digest=str(digest), name=name))
        start = time.monotonic()
        try:
            if isinstance(op, ExecOp):
                solved = await self._exec(digest, op, meta, name, inputs)
            else:
                solved = await self._file(digest, op, meta, inputs, selections)
        except asyncio.CancelledError:
            raise
        except PybuildError as exc:
            self.events(VertexFailed(digest=str(digest), name=name, error=exc.message))
            raise _located(exc, meta) from None
        self.executed.append(name)
        self._record(key, step, parts, name, solved)
        self.events(VertexDone(digest=str(digest), name=name,
                               seconds=time.monotonic() - start))
        return key, solved

    def _record(self, key: str, step: str, parts: dict[str, Any], name: str,
                solved: Solved) -> None:
        self.cache.put(key, step=step, parts=parts, result=solved.to_json(),
                       size=sum(x.size for x in solved.real_layers[-1:]),
                       description=name, created=solved.created)

    async def _from_imported(self, key: str, name: str) -> Solved | None:
        """A --cache-from record for `key`, its layers fetched into the store; None if
        there is none or its layers cannot be had (then the step runs)."""
        imported = self.opts.imported_cache
        record = imported.get(key) if imported is not None else None
        if imported is None or record is None:
            return None
        try:
            await asyncio.to_thread(imported.fetch, self.store, record)
        except (PybuildError, OSError) as exc:
            why = exc.message if isinstance(exc, PybuildError) else str(exc)
            self.events(Notice(f"{name}: cached result from {record['source']} unusable "
                               f"({why}); running the step", level="warning"))
            return None
        return Solved.from_json(record["result"])

    # -- snapshots ----------------------------------------------------------------------

    def _snapshot_dir(self, layer: LayerRef) -> str:
        return str(self.opts.snapshots / layer.snapshot_name)

    async def _ensure_snapshots(self, solved: Solved) -> list[str]:
        """Unpack missing snapshots; return lowerdirs top-first."""
        async def ensure(layer: LayerRef) -> None:
            path = self._snapshot_dir(layer)
            if os.path.isdir(path):
                return
            lock = self._snapshot_locks.setdefault(layer.snapshot_name, asyncio.Lock())
            async with lock, self._io_sem:
                blob = LayerBlob(path=str(self.store.blob_path(layer.digest)),
                                 digest=layer.digest, size=layer.size, diff_id=layer.diff_id)
                await self.sandbox.unpack(blob, path)

        layers = solved.real_layers
        await asyncio.gather(*(ensure(x) for x in layers))
        return [self._snapshot_dir(x) for x in reversed(layers)]

    def _step_dir(self, digest: Digest) -> str:
        return str(self.opts.workdir / f"{digest.hex[:12]}-{uuid.uuid4().hex[:6]}")

    async def _commit(self, step_dir: str, base: Solved, lowers: list[str]) -> Solved:
        out = str(self.opts.workdir / f"layer-{uuid.uuid4().hex}")
        # With the lowers, whiteouts of paths no lower has are dropped (as for RUN steps).
        res = await self.sandbox.commit(step_dir, self._commit_spec(out, lowers))
        return await self._layer_from_commit(res, out, base)

    def _commit_spec(self, out: str, lowers: list[str]) -> CommitSpec:
        return CommitSpec(out=out, compression=self.opts.compression,
                          snapshot_dir=str(self.opts.snapshots),
                          mtime=self.opts.source_date_epoch, lowers=tuple(lowers))

    async def _layer_from_commit(self, res: CommitResult, out: str, base: Solved,
                                 name: str = "") -> Solved:
        """Publish a committed layer blob in the content store; base + the new layer (or
        an empty-layer marker). Records how long producing the layer took."""
        now = time.time()
        if res.empty:
            os.unlink(out)
            return Solved(layers=(*base.layers, None), created=now)
        start = time.monotonic()
        digest = await asyncio.to_thread(self.store.ingest_file, Path(out), res.digest)
        if name:
            self.layer_seconds[name] = res.seconds + (time.monotonic() - start)
        layer = LayerRef(digest=digest, diff_id=res.diff_id, size=res.compressed_size,
                         media_type=res.media_type)
        return Solved(layers=(*base.layers, layer), created=now)

    # -- exec ---------------------------------------------------------------------------

    async def _exec(self, digest: Digest, op: ExecOp, meta: OpMetadata, name: str,
                    inputs: list[tuple[str, Solved]]) -> Solved:
        by_op = _by_op(op, inputs)
        base = by_op[op.rootfs.op] if op.rootfs is not None else Solved(layers=())
        lowers = await self._ensure_snapshots(base)
        mounts: list[StepMount] = []
        for m in op.mounts:
            spec = await self._mount_spec(m, by_op)
            if spec is not None:
                mounts.append(spec)
        env = list(op.env) + [e for e in op.proxy_env
                              if e.split("=", 1)[0] not in {x.split("=", 1)[0] for x in op.env}]
        if not any(e.startswith("PATH=") for e in env):
            env.append("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        # "default" is the host's network (what rootless BuildKit and Buildah give RUN
        # steps: connectivity, including the host's loopback); see executor/daemon/step.py.
        network = op.network if op.network != "default" else self.opts.network_default
        step_dir = self._step_dir(digest)
        output: list[str] = []

        def on_log(data: str) -> None:
            output.append(data)
            self.events(VertexLog(digest=str(digest), name=name, data=data))

        out = str(self.opts.workdir / f"layer-{uuid.uuid4().hex}")
        step = ExecStep(step_dir=step_dir, lowers=tuple(lowers), args=op.args, env=tuple(env),
                        cwd=op.cwd, user=op.user, hostname=op.hostname, network=network,
                        insecure=op.security == "insecure", mounts=tuple(mounts),
                        commit=self._commit_spec(out, lowers))
        try:
            async with self._run_sem:
                # One request runs the step and, if it succeeds, diffs and commits its layer.
                res = await self.sandbox.run(step, on_log=on_log)
        finally:
            for spec in mounts:
                if isinstance(spec, BindFromTar):
                    with contextlib.suppress(OSError):
                        os.unlink(spec.tar)
            self._notices()
        code = res.exit_code
        if res.runtime_error:
            raise StepFailedError(
                f"the OCI runtime {res.runtime} could not run process "
                f"{_argv_text(op.args)}: {res.runtime_error}",
                output="".join(output), step_exit_code=code)
        if code != 0:
            raise StepFailedError(
                f"process {_argv_text(op.args)} did not complete successfully: exit code: "
                f"{code}", output="".join(output), step_exit_code=code)
        assert res.layer is not None
        return await self._layer_from_commit(res.layer, out, base, name)

    def _notices(self) -> None:
        for notice in self.sandbox.take_notices():
            self.events(Notice(notice.text, level=notice.level))

    async def _mount_spec(self, m: Mount, by_op: dict[Digest, Solved]) -> StepMount | None:
        """The executor's view of one RUN mount; None for an absent optional secret."""
        if m.type == "bind":
            if m.input is None:
                raise UserError("bind mount without a source")
            ctx = self._context_for(m.input)
            if ctx is not None:
                # The selected context files (.dockerignore applied, as BuildKit sends
                # them) are unpacked into the step dir by the sandbox: the user's files
                # are never exposed, and an rw mount's writes vanish with the step.
                entries = await asyncio.to_thread(ctx.select, (m.selector,), ())
                tar_path = str(self.opts.workdir / f"bind-{uuid.uuid4().hex}.tar")

                def write_tar() -> None:
                    with open(tar_path, "wb") as f:
                        ctx.write_tar(entries, f)

                await asyncio.to_thread(write_tar)
                return BindFromTar(target=m.target, tar=tar_path, selector=m.selector,
                                   readonly=m.readonly)
            lowers = await self._ensure_snapshots(by_op[m.input.op])
            return BindFromLowers(target=m.target, lowers=tuple(lowers), selector=m.selector,
                                  readonly=m.readonly)
        if m.type == "tmpfs":
            return Tmpfs(target=m.target, size=m.tmpfs_size, readonly=m.readonly)
        if m.type == "cache":
            assert m.cache is not None
            cid = hashlib.sha256(m.cache.id.encode()).hexdigest()[:32]
            seed: tuple[str, ...] | None = None
            if m.input is not None and not self._is_context(m.input):
                seed = tuple(await self._ensure_snapshots(by_op[m.input.op]))
            return CacheDir(target=m.target, dir=os.path.join(self.opts.cache_root, cid),
                            sharing=m.cache.sharing, mode=m.cache.mode, uid=m.cache.uid,
                            gid=m.cache.gid, readonly=m.readonly, seed_lowers=seed,
                            seed_selector=m.selector)
        if m.type == "secret":
            assert m.secret is not None
            sec = m.secret
            given = {sid: (kind, value) for sid, kind, value in self.opts.secrets}
            data: bytes | None = None
            if sec.id in given:
                kind, value = given[sec.id]
                if kind == "value":  # read by the caller (an environment variable, bytes)
                    data = value.encode("utf-8", "surrogateescape")
                else:
                    try:
                        with open(value, "rb") as f:
                            data = f.read()
                    except OSError as exc:
                        raise UserError(f"secret {sec.id}: cannot read {value}: "
                                        f"{exc.strerror}") from None
            if data is None:
                if sec.required:
                    raise UserError(f"secret {sec.id} not found: this RUN requires it",
                                    hint=f"pass --secret id={sec.id},src=FILE or "
                                         f"--secret id={sec.id},env=VARIABLE")
                return None
            return SecretFile(target=m.target, data=data, env=sec.env, uid=sec.uid,
                              gid=sec.gid, mode=sec.mode)
        if m.type == "ssh":
            agents = dict(self.opts.ssh)
            if m.ssh_id not in agents:
                raise UserError(f"no SSH agent or key {m.ssh_id!r} forwarded to this build",
                                hint=f"pass --ssh {m.ssh_id}=SOCKET (or --ssh default with "
                                     "SSH_AUTH_SOCK set)")
            agent = agents[m.ssh_id] or os.environ.get("SSH_AUTH_SOCK", "")
            if not agent:
                raise UserError(f"--ssh {m.ssh_id}: no socket given and SSH_AUTH_SOCK is "
                                "not set")
            ssh = m.ssh if m.ssh is not None else SSHOpts(id=m.ssh_id)
            return SSHSocket(target=m.target, socket=agent, uid=ssh.uid, gid=ssh.gid,
                             mode=ssh.mode)
        raise UserError(f"RUN --mount=type={m.type} is not supported")

    # -- file ---------------------------------------------------------------------------

    async def _file(self, digest: Digest, op: FileOp, meta: OpMetadata,
                    inputs: list[tuple[str, Solved]],
                    selections: dict[int, list[ContextEntry]]) -> Solved:
        by_op = _by_op(op, inputs)
        base = by_op[op.base.op] if op.base is not None else Solved(layers=())
        direct = self._prewritten.pop(digest, None)
        if direct is None and 0 in selections:
            direct = await self._context_layer(op, base, selections[0])
        if direct is not None:
            return direct
        lowers = await self._ensure_snapshots(base)
        step_dir = self._step_dir(digest)
        actions: list[FileAction] = []
        for i, action in enumerate(op.actions):
            owner = Owner(user=action.chown.user, group=action.chown.group) \
                if action.chown else None
            match action:
                case MkdirAction():
                    actions.append(MakeDir(path=action.path, mode=action.mode, owner=owner))
                case MkfileAction():
                    actions.append(MakeFile(path=action.path, data=action.data,
                                            mode=action.mode, owner=owner))
                case CopyAction():
                    copy = CopyFiles(
                        source=FromLowers(lowers=()), sources=action.sources, dest=action.dest,
                        dest_is_dir=action.dest_is_dir, owner=owner, chmod=action.chmod,
                        exclude=action.exclude, include_patterns=action.include_patterns,
                        required_paths=action.required_paths, unpack=action.unpack)
                    ctx = self._context_for(action.source)
                    if i in selections and ctx is not None:
                        tar_path = str(self.opts.workdir / f"ctx-{uuid.uuid4().hex}.tar")
                        prefix = _direct_copy_prefix(ctx, action, owner)
                        await asyncio.to_thread(_write_context_tar, ctx, selections[i],
                                                tar_path, prefix or "")
                        # (--exclude was applied when selecting.)
                        copy = replace(copy, source=FromTar(tar=tar_path), exclude=())
                        if prefix is not None:
                            # One directory's contents, no owner/mode rewriting: the tar is
                            # rooted at it and may be extracted straight onto the rootfs.
                            copy = replace(
                                copy, source=FromTar(tar=tar_path, direct=True), sources=("/",),
                                dest_is_dir=True)
                    else:
                        copy = replace(copy, source=FromLowers(lowers=tuple(
                            await self._ensure_snapshots(by_op[action.source.op]))))
                    actions.append(copy)
        try:
            done = await self.sandbox.apply_files(
                FileStep(step_dir=step_dir, lowers=tuple(lowers), actions=tuple(actions)))
        finally:
            for a in actions:
                if isinstance(a, CopyFiles) and isinstance(a.source, FromTar):
                    with contextlib.suppress(OSError):
                        os.unlink(a.source.tar)
            self._notices()
        for warning in done.warnings:
            self.events(Notice(f"{meta.description or op.kind}: {warning}", level="warning"))
        return await self._commit(step_dir, base, lowers)


    def _context_layer_action(self, op: ExecOp | FileOp) -> tuple[
            CopyAction, BuildContext, str, str] | None:
        """(action, context, source dir in the context, destination) of a FileOp that is
        one `COPY dir/ /dest/` from a context; None for anything else."""
        if (not isinstance(op, FileOp) or len(op.actions) != 1
                or self.opts.compression != "none"):
            return None
        action = op.actions[0]
        if not isinstance(action, CopyAction) or action.chown:
            return None
        ctx = self._context_for(action.source)
        if ctx is None:
            return None
        prefix = _direct_copy_prefix(ctx, action, None)
        dest = os.path.normpath("/" + action.dest.strip("/"))
        if prefix is None or dest == "/":
            return None
        return action, ctx, prefix, dest

    async def _context_layer(self, op: FileOp, base: Solved, entries: list[ContextEntry],
                             stat_cache: StatCache | None = None) -> Solved | None:
        """`COPY dir/ /dest/` from the context into a destination the base does not have:
        write the layer straight from the context (see context_layer); None when the
        general way must run."""
        from pybuild.builder import context_layer

        found = self._context_layer_action(op)
        if found is None or not self.sandbox.capabilities.probe_path:
            return None
        _, _, prefix, dest = found
        ordered = context_layer.layout(entries, prefix)
        if ordered is None:
            return None
        lowers = await self._ensure_snapshots(base)
        probe = await self.sandbox.probe_path(lowers, dest)
        chain = probe.chain
        if (not probe.missing or len(chain) != dest.count("/") - 1
                or not all(stat.S_ISDIR(m.mode) for m in chain)):
            return None  # the destination exists, or a parent is missing or a symlink
        layer = await asyncio.to_thread(context_layer.write_context_layer, self.store,
                                        ordered, dest, chain, self.opts.source_date_epoch,
                                        stat_cache)
        ref = LayerRef(digest=layer.digest, diff_id=layer.digest, size=layer.size,
                       media_type=mediatypes.OCI_LAYER)
        return Solved(layers=(*base.layers, ref), created=time.time())

    async def _prewrite_context_layer(self, digest: Digest, op: ExecOp | FileOp,
                                      inputs: list[tuple[str, Solved]]) -> dict[
            int, list[ContextEntry]]:
        """A context COPY whose files the stat cache does not know (a first build, a fresh
        clone) would read every file twice: once for its cache key, once for its layer.
        Write the layer first, recording the digests in the stat cache on the way, so the
        key costs nothing; the layer is used if the key misses (it almost always does:
        the files were never seen). Returns the selection made, by action index."""
        found = self._context_layer_action(op)
        if found is None or not isinstance(op, FileOp):
            return {}
        action, ctx, _, _ = found
        entries = await asyncio.to_thread(self._select, ctx, action)
        # A sample is enough to tell a cold stat cache from a warm one.
        sample = [e for e in entries[::max(1, len(entries) // 64)]
                  if stat.S_ISREG(e.st.st_mode)]
        unknown = sum(1 for e in sample if not ctx.stat_cache.known(e.path, e.st))
        if len(entries) >= _PREWRITE_MIN_FILES and unknown * 2 > len(sample):
            base = _by_op(op, inputs)[op.base.op] if op.base is not None else Solved(layers=())
            # Shown as BuildKit shows its context transfer: a vertex of its own.
            vertex, label = f"context:{digest}", "[internal] load build context"
            self.events(VertexStarted(digest=vertex, name=label))
            start = time.monotonic()
            solved = await self._context_layer(op, base, entries, ctx.stat_cache)
            self.events(VertexDone(digest=vertex, name=label,
                                   seconds=time.monotonic() - start))
            if solved is not None:
                self._prewritten[digest] = solved
        return {0: entries}


# --- helpers ---------------------------------------------------------------------------

# Below this many files a context COPY is cheap to read twice; above it, reading once pays.
_PREWRITE_MIN_FILES = 64


def _by_op(op: ExecOp | FileOp, inputs: list[tuple[str, Solved]]) -> dict[Digest, Solved]:
    """The solved inputs of `op`, by the digest of the op that made each."""
    return {i.op: s for i, (_, s) in zip(op.inputs(), inputs, strict=True)}


def _file_digests(ctx: BuildContext, entries: list[ContextEntry]) -> dict[str, str]:
    return {e.rel: ctx.digest([e]) for e in entries}


def _write_context_tar(ctx: BuildContext, entries: list[ContextEntry], path: str,
                       strip_prefix: str = "") -> None:
    with open(path, "wb") as f:
        ctx.write_tar(entries, f, strip_prefix)


def _direct_copy_prefix(ctx: BuildContext, action: CopyAction,
                        chown: Owner | None) -> str | None:
    """For `COPY dir/ /dest/`-style actions (one plain directory source, no --chown,
    --chmod, --parents or unpacking): the source's path in the context, "" for the root;
    None when the general copy must run."""
    import re

    if (len(action.sources) != 1 or chown or action.chmod or action.include_patterns
            or action.required_paths or action.unpack):
        return None
    src = action.sources[0].strip("/")
    if re.search(r"[*?\[\\]", src) or ".." in src.split("/"):
        return None
    src = os.path.normpath(src) if src else ""
    src = "" if src == "." else src
    if src and (os.path.islink(os.path.join(ctx.root, src))
                or not os.path.isdir(os.path.join(ctx.root, src))):
        return None
    return src


def _hash(value: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _argv_text(args: tuple[str, ...]) -> str:
    return json.dumps(list(args))


def _located(exc: PybuildError, meta: OpMetadata) -> PybuildError:
    if exc.location is None and meta.filename:
        text = meta.description.split("] ", 1)[-1]
        exc.location = SourceLocation(meta.filename, meta.start_line, meta.end_line,
                                      instruction=text.split(" ", 1)[0], text=text)
    return exc


def explain_miss(previous: CacheRecord | None, parts: dict[str, Any], meta: OpMetadata) -> str:
    """Which part of the cache key differs from the last record of the same step."""
    if previous is None:
        return "first build of this step"
    old = previous.parts
    if old.get("inputs") != parts.get("inputs") and old.get("op") == parts.get("op"):
        names = parts.get("input_names") or []
        pairs = zip(old.get("inputs", []), parts.get("inputs", []), strict=False)
        changed = [names[i] for i, (a, b) in enumerate(pairs) if a != b and i < len(names)]
        if changed and old.get("input_names") == names:
            return "changed input: " + ", ".join(dict.fromkeys(changed))
        return "an earlier step or the base image changed"
    old_files, new_files = old.get("file_list", {}), parts.get("file_list", {})
    if old.get("files") != parts.get("files"):
        changed = _changed_files(old_files, new_files)
        if changed:
            return "context files changed: " + ", ".join(changed[:5]) + (
                f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return "context files changed"
    if old.get("env") != parts.get("env") and old.get("env") is not None:
        return _changed_env(old.get("env", []), parts.get("env", []))
    if old.get("op") != parts.get("op"):
        was = previous.description.split("] ", 1)[-1]
        now = meta.description.split("] ", 1)[-1]
        if was != now:
            return f"the instruction changed (was: {was})"
        return "the instruction's options changed"
    return "the previous result was removed from the cache"


def _changed_files(old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]) -> list[str]:
    out: list[str] = []
    for idx, files in new.items():
        before = old.get(idx, {})
        for rel in sorted(set(files) | set(before)):
            if files.get(rel) != before.get(rel):
                state = ("added" if rel not in before else "removed" if rel not in files
                         else "modified")
                out.append(f"{rel} ({state})")
    return out


def _changed_env(old: list[str], new: list[str]) -> str:
    o = dict(e.split("=", 1) for e in old if "=" in e)
    n = dict(e.split("=", 1) for e in new if "=" in e)
    diffs = []
    for k in sorted(set(o) | set(n)):
        if o.get(k) != n.get(k):
            diffs.append(f"{k}: {o.get(k)!r} -> {n.get(k)!r}")
    return "environment/build args changed: " + "; ".join(diffs[:5])


Callback = Callable[[str], None]

"""The one place that wires frontend -> builder -> exporters."""

from __future__ import annotations

# Module-level imports stay light: a build starts its sandbox daemon before it loads the
# builder, the frontend or asyncio (see `build`).
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from pybuild.builder.events import EventSink, Notice, discard
from pybuild.content.paths import default_root
from pybuild.errors import NotFoundError, UserError

if TYPE_CHECKING:
    from pybuild.builder.executor.daemon import DaemonProcess
    from pybuild.builder.executor.idmap import IdMap
    from pybuild.content.images import ImageStore
    from pybuild.content.store import ContentStore
    from pybuild.digest import Digest
    from pybuild.oci.config import History, ImageConfig
    from pybuild.oci.descriptor import Descriptor, Manifest
    from pybuild.oci.platform import Platform
    from pybuild.oci.reference import Reference
    from pybuild.registry import RegistryOptions


@dataclass(frozen=True, slots=True)
class Roots:
    """Every path under the pybuild root."""

    root: Path

    @property
    def content(self) -> Path:
        return self.root / "content"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def cache_db(self) -> Path:
        return self.root / "cache" / "records.db"

    @property
    def stat_cache(self) -> Path:
        return self.root / "cache" / "statcache.bin"

    @property
    def sandbox(self) -> Path:
        """Everything owned by the build user namespace lives under here."""
        return self.root / "sandbox"

    @property
    def snapshots(self) -> Path:
        return self.sandbox / "snapshots"

    @property
    def tmp(self) -> Path:
        return self.sandbox / "tmp"

    @property
    def cache_mounts(self) -> Path:
        return self.sandbox / "cachemounts"


class Stores:
    """The content store and image store of one pybuild root (each opened on first use:
    a build reads neither before it has started its sandbox daemon)."""

    def __init__(self, root: Path | None = None) -> None:
        self.roots = Roots(root or default_root())
        self.roots.root.mkdir(parents=True, exist_ok=True)
        self._content: ContentStore | None = None
        self._images: ImageStore | None = None

    @property
    def content(self) -> ContentStore:
        if self._content is None:
            from pybuild.content.store import ContentStore

            self._content = ContentStore(self.roots.content)
        return self._content

    @property
    def images(self) -> ImageStore:
        if self._images is None:
            from pybuild.content.images import ImageStore

            self._images = ImageStore(self.roots.images)
        return self._images


class LocalResolver:
    """Base images come from the local image store; missing ones are pulled from their
    registry (unless pulling is off), and `oci-layout://` references are imported.
    `resolved`: each name answered from the store (or pulled into it) -> its digest there.
    `on_image(manifest, config)`: called with each image resolved from the store."""

    def __init__(self, stores: Stores, registry: RegistryOptions | None = None,
                 pull: bool = True,
                 on_image: Callable[[Manifest, ImageConfig], None] | None = None) -> None:
        self.stores = stores
        self.registry = registry
        self.pull = pull
        self.resolved: dict[str, str] = {}
        self.on_image = on_image

    def resolve(self, ref: str, platform: Platform) -> Any:
        from pybuild.content.walk import read_config, read_manifest, resolve_platform
        from pybuild.frontend.convert import ResolvedImage
        from pybuild.oci.reference import Reference

        if ref.startswith("oci-layout://"):
            return self._resolve_layout(ref, platform)
        try:
            reference = Reference.parse(ref)
        except UserError as exc:
            raise UserError(f"invalid base image reference {ref!r}: {exc.message}") from None
        record = self.stores.images.find(reference)
        if record is not None:
            desc = record.descriptor
        else:
            desc = self._pull(reference, platform)
        self.resolved[ref] = str(desc.digest)
        desc = resolve_platform(self.stores.content, desc, platform, name=reference.familiar)
        manifest = read_manifest(self.stores.content, desc)
        config = read_config(self.stores.content, manifest)
        if self.on_image is not None:
            self.on_image(manifest, config)
        name = reference.repository if reference.digest else str(
            reference.with_tag(reference.tag or "latest"))
        return ResolvedImage(name=name, digest=desc.digest, config=config)

    def _pull(self, reference: Reference, platform: Platform) -> Descriptor:
        not_here = NotFoundError(
            f"base image {reference.familiar} is not in the local image store",
            hint="pybuild builds from images in its store (`pybuild images`) and pulls "
                 "missing ones from their registry; `make base` imports busybox:latest, "
                 "`pybuild load -i` imports an OCI or docker archive",
        )
        if not self.pull:
            raise not_here
        _asyncio_tls()
        from pybuild.registry import RegistryError, pull_sync
        from pybuild.registry.errors import RegistryUnreachableError

        try:
            desc = pull_sync(reference, self.stores.content, platforms=[platform],
                             options=self.registry)
        except RegistryUnreachableError as exc:
            not_here.message = f"{not_here.message}, and {exc.message}"
            raise not_here from None
        except RegistryError:
            raise
        self.stores.images.put(reference, desc, _rfc3339(time.time()))
        return desc

    def _resolve_layout(self, ref: str, platform: Platform) -> Any:
        from pybuild.content.walk import read_config, read_manifest, resolve_platform
        from pybuild.exporters.oci_layout import read_oci_layout
        from pybuild.frontend.convert import ResolvedImage

        body = ref.removeprefix("oci-layout://")
        if "@" in body:
            path, _, selector = body.rpartition("@")
        elif ":" in os.path.basename(body):
            path, _, selector = body.rpartition(":")
        else:
            path, selector = body, ""
        desc = read_oci_layout(path, self.stores.content, selector or None)
        desc = resolve_platform(self.stores.content, desc, platform, name=ref)
        config = read_config(self.stores.content, read_manifest(self.stores.content, desc))
        return ResolvedImage(name=f"oci-layout://{path}", digest=desc.digest, config=config)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRequest:
    context: str
    dockerfile: str = ""  # path; default <context>/Dockerfile
    tags: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platform: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = "default"
    runtime: str = ""
    compression: str = "gzip"  # of exported/pushed layers; the store keeps them plain
    max_parallelism: int = 0
    source_date_epoch: int | None = None
    outputs: tuple[str, ...] = ()
    # --secret id=ID,src=FILE | id=ID,env=VAR -> (id, "file" | "env", path or variable)
    secrets: tuple[tuple[str, str, str], ...] = ()
    # --ssh default | ID=SOCKET -> (id, socket path or "" for $SSH_AUTH_SOCK)
    ssh: tuple[tuple[str, str], ...] = ()
    # --build-context NAME=VALUE, as given (VALUE: DIR, docker-image://REF, oci-layout://…)
    named_contexts: tuple[tuple[str, str], ...] = ()
    registry: RegistryOptions | None = None  # credentials/TLS for pulls and pushes
    pull: bool = True  # fetch base images missing from the store from their registry
    # --cache-from / --cache-to, as given (type=local,src=DIR | type=registry,ref=REF | REF)
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()


@dataclass(slots=True)
class BuildResult:
    manifest: Descriptor
    config: ImageConfig
    config_digest: Digest
    tags: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    layer_seconds: dict[str, float] = field(default_factory=dict)
    misses: dict[str, str] = field(default_factory=dict)


def _read_dockerfile(req: BuildRequest) -> tuple[bytes, str]:
    if not os.path.isdir(req.context):
        raise UserError(f"build context {req.context!r} is not a directory")
    path = req.dockerfile or os.path.join(req.context, "Dockerfile")
    if not req.dockerfile and not os.path.exists(path):
        lower = os.path.join(req.context, "dockerfile")
        if os.path.exists(lower):
            path = lower
    try:
        with open(path, "rb") as f:
            return f.read(), path
    except FileNotFoundError:
        raise NotFoundError(f"Dockerfile not found: {path}",
                            hint="pass -f PATH, or add a Dockerfile to the context") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a Dockerfile") from None


def _read_ignore(context: str, dockerfile_path: str) -> tuple[list[str], str]:
    from pybuild.frontend.dockerignore import read_ignore_file

    specific = dockerfile_path + ".dockerignore"
    for path in (specific, os.path.join(context, ".dockerignore")):
        try:
            with open(path, encoding="utf-8") as f:
                return read_ignore_file(f.read()), os.path.basename(path)
        except FileNotFoundError:
            continue
    return [], ".dockerignore"


@contextlib.contextmanager
def _build_dir(roots: Roots) -> Iterator[Path]:
    """This build's scratch dir, held by an flock so a later start knows it is alive."""
    import uuid

    roots.tmp.mkdir(parents=True, exist_ok=True)
    path = roots.tmp / f"build-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + ".lock")


def _stale_build_dirs(roots: Roots) -> list[str]:
    """Scratch dirs of builds that are no longer running (killed pybuild processes)."""
    out: list[str] = []
    if not roots.tmp.is_dir():
        return out
    for name in os.listdir(roots.tmp):
        if not name.startswith("build-") or name.endswith(".lock"):
            continue
        lock = roots.tmp / (name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            out.append(str(roots.tmp / name))
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out.append(str(roots.tmp / name))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return out


def _check_traversable(path: Path) -> None:
    """A root build's steps run as a shifted, unprivileged id: it must reach the root."""
    import stat as stat_mod

    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & stat_mod.S_IXOTH:
            raise UserError(
                f"the pybuild root {path.parent} is under {parent}, which other users cannot "
                "enter; builds run by root execute their steps as an unprivileged id",
                hint="use a root such as /var/lib/pybuild (the default), or "
                     f"`chmod o+x {parent}`")


def _prepare_sandbox_dirs(roots: Roots, idmap_key: str, outside_root: tuple[int, int],
                          events: EventSink) -> None:
    """Dirs the namespace writes to are owned by its root; a changed id map retires the
    snapshots made under the old one (they are only unpacked copies of blobs)."""
    import uuid

    sandbox = roots.sandbox
    marker = sandbox / "idmap"
    if sandbox.is_dir():
        try:
            old = marker.read_text()
        except FileNotFoundError:
            old = ""
        if old != idmap_key:
            retired = roots.root / f"sandbox.retired-{uuid.uuid4().hex[:8]}"
            os.rename(sandbox, retired)
            events(Notice(f"the user namespace id map changed; old snapshots moved to "
                          f"{retired} (safe to delete)", level="warning"))
    for d in (sandbox, roots.snapshots, roots.tmp, roots.cache_mounts):
        d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(d, *outside_root)
    if os.geteuid() == 0 and outside_root[0] != 0:
        _check_traversable(sandbox)
    marker.write_text(idmap_key)


@dataclass(slots=True)
class _Prepared:
    """What a build works out before its event loop starts: first what it reads, enough
    to tell whether it will probably run steps (and so start the sandbox daemon at once);
    then the frontend's results."""

    data: bytes
    df_path: str
    ignore_patterns: list[str]
    ignore_name: str
    platforms: list[Platform | None]
    memos: list[Path]  # the frontend's memo file, per platform
    idmap: IdMap
    likely_runs: bool
    daemon: DaemonProcess | None = None
    fes: list[Any] = field(default_factory=list)

    def start_daemon(self) -> None:
        """Start the sandbox daemon (the build will probably need it). A failure to start
        it shows when it is needed."""
        if self.daemon is None:
            from pybuild.builder.executor.daemon import DaemonProcess

            try:
                self.daemon = DaemonProcess()
            except OSError:
                return
        self.daemon.handshake(self.idmap)


def _ran_marker(memo: Path) -> Path:
    """Present when the last build of this frontend result ran steps."""
    return memo.with_name(memo.name + ".ran")


def _plan(req: BuildRequest, stores: Stores) -> _Prepared:
    """Read the build's inputs. It will probably run steps (and need the sandbox) after a
    Dockerfile (or arguments, base images...) the frontend has not seen, or in an edit
    loop (the last build from the same frontend result ran steps); a repeated no-op
    rebuild needs no sandbox."""
    from pybuild.builder.executor import idmap as idmap_mod

    data, df_path = _read_dockerfile(req)
    ignore_patterns, ignore_name = _read_ignore(req.context, df_path)
    platforms = _parse_platforms(req.platform)
    memos = [_memo_path(stores, data, df_path, req, p, tuple(ignore_patterns))
             for p in platforms]
    likely = (req.no_cache or bool(req.no_cache_filter) or _ran_marker(memos[0]).exists()
              or not all(m.exists() for m in memos))
    return _Prepared(data=data, df_path=df_path, ignore_patterns=ignore_patterns,
                     ignore_name=ignore_name, platforms=platforms, memos=memos,
                     idmap=idmap_mod.detect(), likely_runs=likely)


def _frontend(req: BuildRequest, stores: Stores, events: EventSink, prep: _Prepared) -> None:
    """The sandbox's dirs, then the frontend. A Dockerfile it has not seen starts the
    daemon (if `build` has not); the base images it resolves are unpacked into snapshots
    by the daemon meanwhile (see `_prefetcher`)."""
    idmap = prep.idmap
    if idmap.warning:
        events(Notice(idmap.warning, level="warning"))
    outside = (idmap.uid_extents[0].outside, idmap.gid_extents[0].outside)
    _prepare_sandbox_dirs(stores.roots, idmap.key, outside, events)
    if prep.daemon is not None:
        # The daemon picks its snapshotter first thing (in the build namespace's scratch
        # area), before the base image arrives to unpack.
        prep.daemon.prefetch("probe_snapshotter", dir=str(stores.roots.tmp))
    prep.fes = [_compile_memoized(stores, memo, prep.data, prep.df_path, req, p,
                                  tuple(prep.ignore_patterns), on_miss=prep.start_daemon,
                                  on_image=_prefetcher(stores, prep))
                for p, memo in zip(prep.platforms, prep.memos, strict=True)]


def _prefetcher(stores: Stores, prep: _Prepared) -> Callable[[Any, Any], None]:
    """For the resolver: have the daemon unpack a resolved image's layers into snapshots
    (as the solver names them) as soon as it is up, while the frontend and the builder's
    imports go on; the solver's own request then gets that result."""

    requested: set[Path] = set()  # every stage resolves its base anew

    def on_image(manifest: Any, config: Any) -> None:
        if prep.daemon is None:
            return
        for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=False):
            # Named as solver.LayerRef.snapshot_name names it (not imported: loading the
            # builder here would hold the request back ~30 ms). Were they to differ, the
            # solver would just unpack its own.
            dest = stores.roots.snapshots / diff_id.hex[:24]
            if dest in requested or dest.is_dir() or not stores.content.has(desc.digest):
                continue
            requested.add(dest)
            prep.daemon.prefetch("apply", blob=str(stores.content.blob_path(desc.digest)),
                                 dest=str(dest), digest=str(desc.digest))

    return on_image


async def build_async(req: BuildRequest, stores: Stores, events: EventSink = discard, *,
                      prepared: _Prepared | None = None) -> BuildResult:
    """`prepared`: what `build` did before its event loop started (reading the inputs,
    starting the sandbox daemon, the frontend); done here if not given."""
    import asyncio

    if prepared is None:
        prep = _plan(req, stores)
        if prep.likely_runs:
            prep.start_daemon()
    else:
        prep = prepared
    try:
        if prepared is None:
            _frontend(req, stores, events, prep)
        return await _solve(req, stores, events, prep)
    finally:
        if prep.daemon is not None:  # a no-op once its sandbox has closed it
            await asyncio.to_thread(prep.daemon.discard)


async def _solve(req: BuildRequest, stores: Stores, events: EventSink,
                 prep: _Prepared) -> BuildResult:
    import asyncio

    from pybuild.builder.context import BuildContext, StatCache
    from pybuild.builder.executor.client import LazySandbox, find_runtime
    from pybuild.builder.solver import Solver, SolverOptions
    from pybuild.cache.store import CacheStore
    from pybuild.digest import Digest
    from pybuild.frontend.dockerignore import PatternMatcher

    roots = stores.roots
    idmap = prep.idmap
    outside = (idmap.uid_extents[0].outside, idmap.gid_extents[0].outside)
    runtime = find_runtime(req.runtime)
    cache = CacheStore(roots.cache_db)
    stat_cache = StatCache(roots.stat_cache)
    context = BuildContext(req.context, PatternMatcher(prep.ignore_patterns)
                           if prep.ignore_patterns else None, stat_cache,
                           ignore_file=prep.ignore_name)
    fes = prep.fes
    imported = _import_caches(req, stores, events)
    try:
        with _build_dir(roots) as workdir:
            if os.geteuid() == 0:
                os.chown(workdir, *outside)
            async def clean_leftovers(sb: Any) -> None:
                stale = _stale_build_dirs(roots)
                if stale:
                    await sb.request("rm", paths=stale)

            daemon, prep.daemon = prep.daemon, None  # the sandbox's from now on
            async with LazySandbox(idmap, clean_leftovers, daemon=daemon,
                                   scratch=str(workdir)) as sandbox:
                if daemon is not None:
                    sandbox.start_soon()
                try:
                    opts = SolverOptions(
                        root=roots.root, workdir=workdir, snapshots=roots.snapshots,
                        # Layers are stored uncompressed; exports compress them (lazily, once).
                        runtime=runtime, idmap=idmap, compression="none",
                        max_parallelism=req.max_parallelism or default_parallelism(),
                        no_cache=req.no_cache, source_date_epoch=req.source_date_epoch,
                        cache_root=str(roots.cache_mounts),
                        secrets=req.secrets, ssh=req.ssh, imported_cache=imported,
                    )
                    # One solver per platform, all at once: their steps share the sandbox, the
                    # cache and the RUN bound (each solver has its own semaphore, though).
                    solvers = [Solver(fe.definition, store=stores.content, cache=cache,
                                      sandbox=sandbox, context=context, events=events, opts=opts)
                               for fe in fes]
                    solved_all = await asyncio.gather(*(s.solve() for s in solvers))
                finally:
                    await sandbox.settle()
                    if sandbox.started:
                        await sandbox.request("rm", paths=[str(workdir)])
                    else:
                        with contextlib.suppress(OSError):
                            os.rmdir(workdir)
        stat_cache.save()
    finally:
        cache.close()
    executed = [name for s in solvers for name in s.executed]
    misses = {k: v for s in solvers for k, v in s.misses.items()}
    _mark_ran(_ran_marker(prep.memos[0]), bool(executed))
    if executed:
        auto_gc(stores)
    images = [_make_image(stores.content, fe.config, solved, req)
              for fe, solved in zip(fes, solved_all, strict=True)]
    manifest_desc, config = images[0]
    if len(images) > 1:
        manifest_desc = _make_index(stores.content, [d for d, _ in images])
    result = BuildResult(manifest=manifest_desc, config=config,
                         config_digest=Digest.from_bytes(config.encode()),
                         executed=executed, misses=misses,
                         layer_seconds={k: v for s in solvers for k, v in s.layer_seconds.items()})
    _export_caches(req, stores, solvers, events)
    created = config.created or _rfc3339(time.time())
    for tag in req.tags:
        from pybuild.oci.reference import Reference

        ref = Reference.parse(tag)
        _put_image(stores, ref, manifest_desc, created)
        result.tags.append(ref.familiar)
    return result


def _import_caches(req: BuildRequest, stores: Stores, events: EventSink) -> Any:
    """--cache-from: the records of every readable source (see cache/remote.py)."""
    from pybuild.cache.remote import parse_cache_option

    for text in req.cache_to:
        parse_cache_option(text, flag="--cache-to")  # a bad flag fails before any step
    if not req.cache_from:
        return None
    from pybuild.builder.events import Notice
    from pybuild.cache.remote import import_caches

    options = [parse_cache_option(x, flag="--cache-from") for x in req.cache_from]
    if any(o.type == "registry" for o in options):
        _asyncio_tls()
    return import_caches(options, stores.content, registry_options=req.registry,
                         warn=lambda text: events(Notice(text, level="warning")))


def _export_caches(req: BuildRequest, stores: Stores, solvers: list[Any],
                   events: EventSink) -> None:
    """--cache-to: write the records of this build's steps (mode=min: those whose layers
    are in the result; max: all). A failure fails the build unless ignore-error=true."""
    if not req.cache_to:
        return
    from pybuild.builder.events import Notice
    from pybuild.cache.remote import export_cache, export_records_for, parse_cache_option
    from pybuild.cache.store import CacheStore
    from pybuild.errors import PybuildError

    cache = CacheStore(stores.roots.cache_db)
    try:
        for text in req.cache_to:
            option = parse_cache_option(text, flag="--cache-to")
            if option.type == "registry":
                _asyncio_tls()
            keys = dict.fromkeys(k for s in solvers for k in s.export_keys(option.mode))
            records = [r for r in (cache.get(k) for k in keys) if r is not None]
            try:
                export_cache(stores.content, option, export_records_for(records),
                             memo_path=stores.roots.root / "cache" / "compressed.json",
                             registry_options=req.registry)
            except PybuildError as exc:
                if option.get("ignore-error") != "true":
                    raise
                events(Notice(f"cache export to {option.where} failed: {exc.message}",
                              level="warning"))
    finally:
        cache.close()


def _mark_ran(marker: Path, ran: bool) -> None:
    with contextlib.suppress(OSError):
        if ran:
            marker.touch()
        elif marker.exists():
            marker.unlink()


def _put_image(stores: Stores, ref: Reference, desc: Descriptor, created: str) -> None:
    """Name the result; an unchanged name is left alone (no rewrite, no fsync), which also
    keeps the frontend's memo of a no-op rebuild valid."""
    record = stores.images.find(ref)
    if (record is not None and record.created == created
            and record.descriptor.to_json() == desc.to_json()):
        return
    stores.images.put(ref, desc, created)


def _parse_platforms(text: str) -> list[Platform | None]:
    """`--platform a,b` -> [a, b]; nothing -> [None] (the host's, chosen by the frontend)."""
    if not text:
        return [None]
    from pybuild.oci.platform import Platform

    out: list[Platform | None] = []
    for part in text.split(","):
        p = Platform.parse(part)
        if p not in out:
            out.append(p)
    return out


def _make_index(store: ContentStore, manifests: list[Descriptor]) -> Descriptor:
    from pybuild.oci import mediatypes as mt
    from pybuild.oci.descriptor import Descriptor, Index

    index = Index(media_type=mt.OCI_INDEX, manifests=tuple(manifests))
    data = index.encode()
    return Descriptor(media_type=mt.OCI_INDEX, digest=store.write(data), size=len(data))


def _source_stamp() -> str:
    """Changes whenever the frontend's code does (a development install edits it)."""
    import pybuild

    base = Path(pybuild.__file__).parent
    stamps = [pybuild.__version__]
    for sub in ("frontend", "frontend/dockerfile", "frontend/shell", "llb", "oci"):
        with os.scandir(base / sub) as it:
            stamps.extend(f"{e.name}:{e.stat().st_mtime_ns}" for e in it
                          if e.name.endswith(".py"))
    return ",".join(sorted(stamps))


class _Compiled(NamedTuple):
    definition: Any
    config: ImageConfig
    stage_name: str
    warnings: tuple[str, ...]


def _memo_path(stores: Stores, data: bytes, df_path: str, req: BuildRequest,
               platform: Platform | None, ignore: tuple[str, ...]) -> Path:
    """Where the frontend's result for these inputs is memoized (see `_compile_memoized`)."""
    import hashlib
    import pickle

    key = hashlib.sha256(pickle.dumps((
        _source_stamp(), data, _dockerfile_name(req, df_path), req.build_args, req.target,
        str(platform), req.labels, ignore, req.no_cache, req.no_cache_filter, req.network,
        req.named_contexts, req.pull,
    ))).hexdigest()
    return stores.roots.root / "cache" / "frontend" / key


def _dockerfile_name(req: BuildRequest, df_path: str) -> str:
    return os.path.relpath(df_path) if not os.path.isabs(req.dockerfile or "") else df_path


def _compile_memoized(stores: Stores, memo: Path, data: bytes, df_path: str,
                      req: BuildRequest, platform: Platform | None, ignore: tuple[str, ...],
                      on_miss: Callable[[], None] | None = None,
                      on_image: Callable[[Any, Any], None] | None = None) -> Any:
    """The frontend is a pure function of its inputs and of the images its names resolve
    to, so its result is memoized (in `memo`, see `_memo_path`) with those names and
    digests, and reused while the store still maps each name to the same digest: a rebuild
    then skips parsing, expansion and their imports, also after tagging a new result."""
    import pickle

    filename = _dockerfile_name(req, df_path)
    try:
        with open(memo, "rb") as f:
            definition, config, stage_name, warnings, resolved = pickle.load(f)
        if all(_store_digest(stores, ref) == digest for ref, digest in resolved):
            return _Compiled(definition, config, stage_name, warnings)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            ValueError, TypeError):
        pass
    if on_miss is not None:
        on_miss()
    from pybuild.frontend.convert import FrontendOptions, NamedContext, compile_dockerfile

    named = []
    for name, value in req.named_contexts:
        nc = NamedContext.parse(value)
        if nc.kind == "local":
            nc = NamedContext(kind="local", value=os.path.abspath(nc.value))
            if not os.path.isdir(nc.value):
                raise UserError(f"--build-context {name}={value}: not a directory")
        named.append((name, nc))
    resolver = LocalResolver(stores, req.registry, req.pull, on_image=on_image)
    fe = compile_dockerfile(
        FrontendOptions(
            dockerfile=data, filename=filename, build_args=req.build_args, target=req.target,
            platform=platform, labels=req.labels, dockerignore=ignore, no_cache=req.no_cache,
            no_cache_filter=req.no_cache_filter, network=req.network,
            named_contexts=tuple(named),
        ),
        resolver,
    )
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        # Plain values only: unpickling must not import the frontend's modules.
        pickle.dump((fe.definition, fe.config, fe.stage_name, fe.warnings,
                     tuple(sorted(resolver.resolved.items()))), f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, memo)
    return fe


def _store_digest(stores: Stores, ref: str) -> str:
    """The digest the image store names `ref` (as the resolver found it); "" if none."""
    try:
        record = stores.images.find(ref)
    except UserError:
        return ""
    return str(record.descriptor.digest) if record is not None else ""


def default_parallelism() -> int:
    """RUN steps at once: 4 per CPU. Steps often wait (sleep, network, I/O) rather than
    compute, and BuildKit bounds nothing by default; 4x keeps memory use predictable."""
    return 4 * max(1, os.cpu_count() or 1)






def _asyncio() -> ModuleType:
    """asyncio, imported (if nothing has yet) without its TLS support: loading ssl costs
    ~10 ms of every start, and only registries need it (see `_asyncio_tls`)."""
    import sys

    if "asyncio" not in sys.modules and "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` fails meanwhile
        try:
            import asyncio
        finally:
            del sys.modules["ssl"]
    import asyncio

    return asyncio


def _asyncio_tls() -> None:
    """Give asyncio the ssl module that `_asyncio` kept from it, before a registry is used
    (httpx does its own TLS, but nothing of asyncio's must be left half-enabled)."""
    import importlib
    import ssl
    import sys

    for name in ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            if name == "asyncio.sslproto":
                importlib.reload(module)  # it derives module constants from ssl
            else:
                vars(module)["ssl"] = ssl




def build(req: BuildRequest, stores: Stores, events: EventSink = discard, *,
          daemon: DaemonProcess | None = None) -> BuildResult:
    """Build. `daemon`: a sandbox daemon the caller started at its own start (see
    `DaemonProcess`), for this build to use if it probably runs steps."""
    # A build that will probably run steps starts its sandbox daemon before anything else:
    # the daemon's start-up (an interpreter and its imports, ~0.1 s) then overlaps with
    # loading asyncio, the frontend and the builder, instead of following them, and it
    # unpacks the base image while they load.
    try:
        prep = _plan(req, stores)
    except BaseException:
        if daemon is not None:
            daemon.discard()
        raise
    prep.daemon = daemon
    try:
        if prep.likely_runs:
            prep.start_daemon()
        elif prep.daemon is not None:
            prep.daemon.discard()
            prep.daemon = None
        # The frontend first: the sooner it resolves the base images, the sooner the
        # daemon unpacks them. (It needs no asyncio; a pull imports it, with ssl.)
        _frontend(req, stores, events, prep)
        asyncio = _asyncio()
        result: BuildResult = asyncio.run(_terminable(build_async(req, stores, events,
                                                                  prepared=prep)))
    finally:
        if prep.daemon is not None:
            prep.daemon.discard()  # a no-op unless the build failed before its sandbox took it
    return result


async def _terminable(coro: Any) -> Any:
    """SIGTERM cancels the build like Ctrl-C does: running steps are stopped, mounts and
    scratch dirs removed, nothing half-written kept; asyncio.CancelledError comes out."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _make_image(store: ContentStore, config: ImageConfig, solved: object,
                req: BuildRequest) -> tuple[Descriptor, ImageConfig]:
    from pybuild.builder.solver import Solved
    from pybuild.oci import mediatypes as mt
    from pybuild.oci.descriptor import Descriptor, Manifest

    assert isinstance(solved, Solved)
    layers = solved.real_layers
    if req.source_date_epoch is not None:
        created = _rfc3339(req.source_date_epoch)
    elif solved.created:
        created = _rfc3339(solved.created)
    else:
        created = config.created
    history = _align_history(list(config.history), solved.layers, created)
    final = config.replace(diff_ids=tuple(x.diff_id for x in layers), history=tuple(history),
                           created=created)
    config_bytes = final.encode()
    config_digest = store.write(config_bytes)
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(media_type=mt.OCI_CONFIG, digest=config_digest,
                          size=len(config_bytes)),
        layers=tuple(Descriptor(media_type=x.media_type, digest=x.digest, size=x.size)
                     for x in layers),
    )
    manifest_bytes = manifest.encode()
    manifest_digest = store.write(manifest_bytes)
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=manifest_digest,
                      size=len(manifest_bytes), platform=final.platform)
    return desc, final


def _align_history(history: list[History], layers: tuple[object, ...],
                   created: str) -> list[History]:
    """Match history entries to the solved layers: an empty diff becomes empty_layer."""
    from pybuild.oci.config import History
    layer_entries = [i for i, h in enumerate(history) if not h.empty_layer]
    out = list(history)
    # Align from the end: the base image's own history may be incomplete.
    for idx, layer in zip(reversed(layer_entries), reversed(layers), strict=False):
        if layer is None:
            h = out[idx]
            out[idx] = History(created=h.created, created_by=h.created_by, author=h.author,
                               comment=h.comment, empty_layer=True)
    base_len = len(history)
    for i, h in enumerate(out):
        if not h.created and h.comment == "buildkit.dockerfile.v0":
            out[i] = History(created=created, created_by=h.created_by, author=h.author,
                             comment=h.comment, empty_layer=h.empty_layer)
    del base_len
    return out


def _compressed(stores: Stores, desc: Descriptor, kind: str | None) -> Descriptor:
    from pybuild.exporters.recompress import compress_image

    return compress_image(stores.content, desc, kind or "gzip",
                          stores.roots.root / "cache" / "compressed.json")


def export_image(stores: Stores, desc: Descriptor, spec_text: str, default_name: str = "",
                 platform: Platform | None = None,
                 registry: RegistryOptions | None = None, compression: str = "gzip",
                 warn: Callable[[str], None] | None = None) -> str:
    """Write a stored image to the destination of one `--output` value; returns a summary.
    `warn` gets the exporter's warnings (e.g. what type=local left out)."""
    import sys

    from pybuild.exporters.base import (
        CacheOnlyOutput,
        DockerOutput,
        ImageOutput,
        LocalOutput,
        OCIOutput,
        TarOutput,
        parse_output,
    )
    from pybuild.exporters.docker_archive import DockerArchiveExporter
    from pybuild.exporters.local import LocalExporter, TarExporter
    from pybuild.exporters.oci_layout import OCILayoutExporter
    from pybuild.oci.reference import Reference

    spec = parse_output(spec_text)

    def dest_of(dest: str | None) -> Any:
        if dest is None or dest == "-":
            if sys.stdout.isatty():
                raise UserError(f"output {spec_text!r}: refusing to write a tarball to a "
                                "terminal; add dest=FILE")
            return sys.stdout.buffer
        return dest

    match spec:
        case OCIOutput():
            desc = _compressed(stores, desc, spec.image.compression or compression)
            names = spec.image.names or ((default_name,) if default_name else ())
            OCILayoutExporter(dest_of(spec.dest), tar=spec.tar,
                              ref_name=names[0] if names else None).export(stores.content, desc)
            return f"OCI {'archive' if spec.tar else 'layout'} {spec.dest}"
        case DockerOutput():
            desc = _compressed(stores, desc, spec.image.compression or compression)
            docker_names = list(spec.image.names) or ([default_name] if default_name else [])
            tags = [Reference.parse(n).familiar for n in docker_names]
            DockerArchiveExporter(dest_of(spec.dest), repo_tags=tags,
                                  platform=platform).export(stores.content, desc)
            return f"docker archive {spec.dest}"
        case LocalOutput():
            LocalExporter(spec.dest, platform=platform, platform_split=spec.platform_split,
                          privileged_files=spec.privileged_files,
                          warn=warn).export(stores.content, desc)
            return f"directory {spec.dest}"
        case TarOutput():
            TarExporter(dest_of(spec.dest), platform=platform,
                        platform_split=spec.platform_split).export(stores.content, desc)
            return f"filesystem tarball {spec.dest}"
        case ImageOutput():
            image_names = list(spec.image.names) or ([default_name] if default_name else [])
            if spec.push and not image_names:
                raise UserError(f"output {spec_text!r}: pushing needs a name (name=REF or -t)")
            pushed = []
            for name in image_names:
                ref = Reference.parse(name)
                stores.images.put(ref, desc, _rfc3339(time.time()))
                if spec.push:
                    packed = _compressed(stores, desc, spec.image.compression or compression)
                    target = (Reference(domain=ref.domain, path=ref.path, digest=packed.digest)
                              if spec.push_by_digest else ref)
                    pushed.append(push_image(stores, desc, target, registry, spec.insecure,
                                             compression=spec.image.compression
                                             or compression))
            return "registry " + ", ".join(pushed) if pushed else "image store"
        case CacheOnlyOutput():
            return "nothing (cache only)"
    raise UserError(f"unsupported output {spec_text!r}")


def load_image(stores: Stores, path: str, tags: tuple[str, ...] = ()) -> tuple[Descriptor,
                                                                              list[str]]:
    """Import an OCI layout (directory or tar) or a docker archive into the store."""
    from pybuild.exporters.oci_layout import read_oci_layout
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.reference import Reference

    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such file or directory")
    desc = read_oci_layout(path, stores.content, None)
    names = list(tags)
    if not names:
        for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
            value = desc.annotation(key)
            if value and (key != "org.opencontainers.image.ref.name" or ":" in value
                          or "/" in value):
                names.append(value)
                break
    if not names:
        raise UserError(f"{path} does not name its image; give a name with -t NAME")
    out = []
    for name in names:
        ref = Reference.parse(name)
        plain = Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size,
                           platform=desc.platform)
        stores.images.put(ref, plain, _rfc3339(time.time()))
        out.append(ref.familiar)
    return desc, out


def parse_size(text: str) -> int:
    """`10GB`, `512MiB`, `1e9` -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*", text.lower())
    if not m:
        raise UserError(f"invalid size {text!r}: use e.g. 10GB or 512MiB")
    base = 1024 if m.group(3) else 1000
    power = " kmgt".index(m.group(2) or " ")
    return int(float(m.group(1)) * base**power)


def parse_duration(text: str) -> float:
    """`24h`, `90m`, `7d`, `3600s` -> seconds."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise UserError(f"invalid duration {text!r}: use e.g. 24h, 90m or 7d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


async def prune_async(stores: Stores, *, everything: bool = False, until: float | None = None,
                      keep_storage: int | None = None, grace: float | None = None) -> Any:
    """Drop cache records and blobs by policy, then the unpacked snapshots nothing uses."""
    import dataclasses
    import shutil

    from pybuild.builder.executor import idmap as idmap_mod
    from pybuild.builder.executor.client import Sandbox
    from pybuild.cache import dirs
    from pybuild.content.gc import GRACE_SECONDS, collect

    report = collect(stores, drop_cache=everything, until=until, keep_storage=keep_storage,
                     grace=GRACE_SECONDS if grace is None else grace)
    dead: list[str] = []
    snaps = stores.roots.snapshots
    if snaps.is_dir():
        live = {d.split(":", 1)[1][:24] for d in report.live_diff_ids}
        dead = [str(p) for p in snaps.iterdir()
                if p.name not in live and not p.name.startswith(".")]
    # Cache mounts and downloaded sources: all with --all, by last use with until=.
    claimed = dirs.claim_stale(stores.roots.cache_mounts, stores.roots.root / "cache",
                               everything=everything, until=until)
    removed = 0
    try:
        for c in claimed:
            if not c.is_cache_mount:  # written by pybuild itself, as the invoking user
                shutil.rmtree(c.path, ignore_errors=True)
                removed += 1
        mounts = [str(c.path) for c in claimed if c.is_cache_mount]
        if dead or mounts:
            idmap = idmap_mod.detect()
            marker = stores.roots.sandbox / "idmap"
            # Their files belong to the namespace's ids: removed from inside it.
            if marker.is_file() and marker.read_text() == idmap.key:
                async with Sandbox(idmap) as sb:
                    await sb.request("rm", paths=[*dead, *mounts])
                removed += len(mounts)
    finally:
        dirs.release(claimed)
    return dataclasses.replace(report, dirs_removed=removed)


def prune(stores: Stores, **kw: Any) -> Any:
    import asyncio

    return asyncio.run(prune_async(stores, **kw))


def auto_gc(stores: Stores) -> None:
    """After a build: keep the store under PYBUILD_GC_KEEP_STORAGE (default 20 GB)."""
    from pybuild.content.gc import DEFAULT_KEEP_STORAGE

    limit_text = os.environ.get("PYBUILD_GC_KEEP_STORAGE", "")
    limit = parse_size(limit_text) if limit_text else DEFAULT_KEEP_STORAGE
    total = 0
    with os.scandir(stores.content.blobs_dir) as it:
        for entry in it:
            total += entry.stat().st_size
    if total > limit:
        prune(stores, keep_storage=limit)


def _with_insecure(options: RegistryOptions | None, insecure: bool) -> RegistryOptions | None:
    from dataclasses import replace

    from pybuild.registry import RegistryOptions

    if not insecure:
        return options
    return replace(options or RegistryOptions(), insecure=True)


def push_image(stores: Stores, desc: Descriptor, ref: Reference,
               registry: RegistryOptions | None = None, insecure: bool = False,
               compression: str = "gzip") -> str:
    """Push an image (manifest or index) from the content store, its layers compressed
    as asked; returns REF@DIGEST."""
    _asyncio_tls()
    from pybuild.oci.reference import Reference
    from pybuild.registry import push_sync

    packed = _compressed(stores, desc, compression)
    digest = push_sync(stores.content, packed, ref, options=_with_insecure(registry, insecure))
    base = Reference(domain=ref.domain, path=ref.path, tag=ref.tag)
    return f"{base.familiar}@{digest}"


def pull_image(stores: Stores, ref_text: str, platforms: list[Platform] | None,
               registry: RegistryOptions | None = None) -> tuple[Descriptor, str]:
    """Pull into the store and name it; one platform records just its manifest."""
    _asyncio_tls()
    from pybuild.content.walk import resolve_platform
    from pybuild.oci import mediatypes as mt
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.reference import Reference
    from pybuild.registry import pull_sync

    ref = Reference.parse(ref_text)
    desc = pull_sync(ref, stores.content, platforms=platforms, options=registry)
    recorded = desc
    if platforms is not None and len(platforms) == 1 and desc.media_type in mt.INDEX_TYPES:
        recorded = resolve_platform(stores.content, desc, platforms[0], name=ref.familiar)
    stores.images.put(ref, Descriptor(media_type=recorded.media_type, digest=recorded.digest,
                                      size=recorded.size, platform=recorded.platform),
                      _rfc3339(time.time()))
    return recorded, ref.familiar

"""One build, from request to result: read the inputs, run the frontend (memoized), solve
every platform, assemble the image, name it, export it, export the cache, collect garbage.

`plan` and `compile` are synchronous and run before the build's event loop starts (the
sandbox daemon starts meanwhile, see `startup`); `run` is the rest, inside the loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pybuild.builder.events import EventSink, Notice
from pybuild.errors import NotFoundError, PybuildError, UserError
from pybuild.frontend import memo
from pybuild.request import BuildRequest, BuildResult, StepReport

if TYPE_CHECKING:
    from pybuild.builder.executor.idmap import IdMap
    from pybuild.builder.remote_cache import ImportedCache
    from pybuild.builder.result import Solved
    from pybuild.builder.solver import Solver
    from pybuild.frontend.results import BuildWarning
    from pybuild.oci.platform import Platform
    from pybuild.root import Root
    from pybuild.startup import Warmup

@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What a build reads before anything else, and what follows from it."""

    dockerfile: bytes
    dockerfile_path: str
    ignore_patterns: tuple[str, ...]
    ignore_name: str
    inputs: tuple[memo.FrontendInputs, ...]  # one per platform
    memos: tuple[Path, ...]
    idmap: IdMap
    likely_runs: bool  # so the sandbox daemon should start at once


def plan(req: BuildRequest, root: Root) -> Plan:
    """Read the build's inputs. It will probably run steps (and need the sandbox) after a
    Dockerfile (or arguments, base images...) the frontend has not seen, or in an edit
    loop (the last build from the same frontend result ran steps); a repeated no-op
    rebuild needs no sandbox."""
    from pybuild import outputs
    from pybuild.builder.executor import idmap as idmap_mod

    _check_tags(req.tags)
    _refuse_unsupported(req)
    outputs.check_outputs(req)
    if req.max_parallelism < 0:  # before anything runs
        raise UserError(f"--max-parallelism {req.max_parallelism}: must be 0 (the default) "
                        "or more", code="bad-flag")
    data, df_path, patterns, ignore_name, inputs = frontend_inputs(req)
    memos = tuple(memo.memo_path(root.frontend_memo_dir, i) for i in inputs)
    likely = (req.no_cache or bool(req.no_cache_filter) or memo.ran_marker(memos[0]).exists()
              or not all(m.exists() for m in memos))
    return Plan(dockerfile=data, dockerfile_path=df_path, ignore_patterns=patterns,
                ignore_name=ignore_name, inputs=inputs, memos=memos, idmap=idmap_mod.detect(),
                likely_runs=likely)


def frontend_inputs(req: BuildRequest) -> tuple[bytes, str, tuple[str, ...], str,
                                                tuple[memo.FrontendInputs, ...]]:
    """What the frontend is given, one per platform (also for `--call`, which builds
    nothing): the Dockerfile's bytes and path, the .dockerignore patterns and name."""
    if not isinstance(req.context, (str, Path)):
        raise UserError("the build context must be a directory here: remote and tar "
                        "contexts are made local by the Builder (see pybuild.contexts)")
    context = str(req.context)
    data, df_path = read_dockerfile(context, str(req.dockerfile), req.dockerfile_data)
    # A Dockerfile from stdin has no `<Dockerfile>.dockerignore` beside it.
    patterns, ignore_name = read_ignore(context, df_path if req.dockerfile_data is None
                                        else "")
    if req.dockerfile_data is not None:  # its name, as given (or buildx's "Dockerfile")
        filename = str(req.dockerfile or "Dockerfile")
    else:
        filename = (df_path if os.path.isabs(str(req.dockerfile or ""))
                    else os.path.relpath(df_path))
    named = tuple((name, _checked_context(name, nc)) for name, nc in req.named_contexts)
    platforms: tuple[Platform | None, ...] = tuple(dict.fromkeys(req.platforms)) or (None,)
    inputs = tuple(memo.FrontendInputs(
        dockerfile=data, filename=filename, build_args=req.build_args, target=req.target,
        platform=p, labels=req.labels, dockerignore=patterns, no_cache=req.no_cache,
        no_cache_filter=req.no_cache_filter, network=req.network, named_contexts=named,
        multi_platform=len(platforms) > 1, pull=req.pull) for p in platforms)
    return data, df_path, patterns, ignore_name, inputs


def _check_tags(tags: tuple[str, ...]) -> None:
    """Names are checked before anything is built (a digest cannot name a new image)."""
    from pybuild.oci.reference import Reference

    for tag in tags:
        if Reference.parse(tag).digest is not None:
            raise UserError(f"-t {tag}: a name for the result cannot pin a digest",
                            code="bad-reference", hint="give a tag (NAME:TAG)")


def _refuse_unsupported(req: BuildRequest) -> None:
    """Flags buildx has that this build cannot honour yet: refused by name, never
    accepted and dropped."""
    refused = [(flag, why) for flag, given, why in (
        ("--add-host", req.extra_hosts, "RUN steps' /etc/hosts is generated by the sandbox, "
         "which takes no extra entries yet"),
        ("--shm-size", req.shm_size is not None, "RUN steps get the sandbox's fixed "
         "/dev/shm (64 MiB tmpfs)"),
        ("--ulimit", req.ulimits, "RUN steps get the sandbox's fixed rlimits "
         "(RLIMIT_NOFILE 1024)"),
    ) if given]
    if refused:
        flag, why = refused[0]
        raise UserError(f"{flag} is not supported yet: {why}", code="unsupported-flag",
                        hint=f"drop {flag}; pybuild refuses flags it cannot honour "
                             "rather than ignore them")
    if req.load is not None and len(dict.fromkeys(req.platforms)) > 1:
        raise UserError("--load: a multi-platform result cannot be loaded into podman or "
                        "docker (a docker archive holds one platform)", code="multi-platform",
                        hint="build one --platform for --load, or export the index with "
                             "-o type=oci,dest=FILE")


def _checked_context(name: str, nc: Any) -> Any:
    """A local named context as an absolute path that exists."""
    if nc.kind != "local":
        return nc
    path = os.path.abspath(nc.value)
    if not os.path.isdir(path):
        raise UserError(f"--build-context {name}={nc.value}: not a directory")
    return type(nc)(kind="local", value=path)


# The names a Dockerfile is found by when -f is not given: buildx's `Dockerfile`, then
# BuildKit's lower-case fallback (`handleLowercaseDockerfile`), then podman/buildah's
# `Containerfile` (buildah's `DiscoverContainerfile` looks for it first; pybuild keeps
# buildx's name first, so a context holding both builds as it does with buildx).
DEFAULT_DOCKERFILES = ("Dockerfile", "dockerfile", "Containerfile")


def read_dockerfile(context: str, dockerfile: str,
                    data: bytes | None = None) -> tuple[bytes, str]:
    """The Dockerfile's bytes and the path it is known by. `data` (from stdin, `-f -`) is
    named `Dockerfile` in the context, as buildx names it. A relative `-f` is relative to
    the working directory, as buildx takes it. Only a regular file is read: a device or
    a FIFO given as `-f` would be read without end (buildx reads only `-f -` from
    stdin)."""
    if not os.path.isdir(context):
        raise UserError(f"build context {context!r} is not a directory")
    if data is not None:
        return data, os.path.join(context, "Dockerfile")
    path = dockerfile
    if not dockerfile:
        candidates = [os.path.join(context, name) for name in DEFAULT_DOCKERFILES]
        path = next((c for c in candidates if os.path.lexists(c)), candidates[0])
    return read_regular_file(path, what="Dockerfile",
                             hint="pass -f PATH, or add a Dockerfile (or Containerfile) "
                                  "to the context"), path


def read_regular_file(path: str, *, what: str, hint: str = "") -> bytes:
    """The bytes of the regular file `path` (symlinks followed); anything else, or a
    missing file, is a one-line error naming the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFoundError(f"{what} not found: {path}", hint=hint or None) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{path} is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is not a regular file ({_file_kind(st.st_mode)})",
                            code="bad-flag",
                            hint="give a regular file (for stdin use -f -)"
                            if what == "Dockerfile" else None)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def read_ignore(context: str, dockerfile_path: str) -> tuple[tuple[str, ...], str]:
    """The .dockerignore patterns: `<Dockerfile>.dockerignore` first, as BuildKit."""
    from pybuild.context.dockerignore import read_ignore as read

    ignore = read(context, dockerfile_path or None)  # (no file beside a Dockerfile on stdin)
    return ignore.patterns, ignore.name


def prepare(plan_: Plan, root: Root, warmup: Warmup, events: EventSink) -> None:
    """The sandbox's dirs, owned by the build namespace's root."""
    from pybuild.builder.workspace import prepare_sandbox_dirs

    idmap = plan_.idmap
    if idmap.warning:
        events(Notice(idmap.warning, level="warning"))
    owner = (idmap.uid_extents[0].outside, idmap.gid_extents[0].outside)
    prepare_sandbox_dirs(root.sandbox, (root.snapshots, root.tmp, root.cache_mounts),
                         idmap.key, owner, events)
    warmup.probe_snapshotter(root.tmp)


def compile(req: BuildRequest, root: Root, plan_: Plan,
            warmup: Warmup) -> list[memo.Compiled]:
    """The frontend's result per platform, from its memo when the images it resolved are
    unchanged. A miss starts the sandbox daemon (the build will run steps); the base
    images it resolves are unpacked meanwhile."""
    out = []
    for inputs, path in zip(plan_.inputs, plan_.memos, strict=True):
        # --pull (always) asks the registries again: the store cannot vouch for a memo.
        found = (None if req.pull == "always" else
                 memo.load(path, lambda ref: _store_digest(root, ref)))
        if found is None:
            warmup.start_daemon()
            found = _compile(req, root, inputs, path, warmup)
        out.append(found)
    return out


def _compile(req: BuildRequest, root: Root, inputs: memo.FrontendInputs, path: Path,
             warmup: Warmup) -> memo.Compiled:
    from pybuild.frontend.dockerfile2llb.convert import compile_dockerfile
    from pybuild.resolver import StoreResolver

    resolver = StoreResolver(root.content, root.images, registry=req.registry, pull=req.pull,
                             on_image=warmup.prefetcher(root.content, root.snapshots))
    fe = compile_dockerfile(inputs.options(), resolver)
    compiled = memo.Compiled(fe.definition, fe.config, fe.stage_name, tuple(fe.warnings),
                             tuple(fe.unused_build_args))
    memo.save(path, compiled, resolver.resolved)
    return compiled


def _store_digest(root: Root, ref: str) -> str:
    """What `ref` (as the resolver was asked it) resolves to in the store now: the digest
    the image store names, or for a pinned reference its digest while the content store
    has it; "" if nothing."""
    from pybuild.oci.reference import Reference

    try:
        reference = Reference.parse(ref)
    except UserError:
        return ""
    if reference.digest is not None:
        return str(reference.digest) if root.content.has(reference.digest) else ""
    record = root.images.find(reference)
    return str(record.descriptor.digest) if record is not None else ""


def default_parallelism() -> int:
    """RUN steps at once: 4 per CPU. Steps often wait (sleep, network, I/O) rather than
    compute, and BuildKit bounds nothing by default; 4x keeps memory use predictable."""
    return 4 * max(1, os.cpu_count() or 1)


# -- inside the event loop ----------------------------------------------------------------


async def run(req: BuildRequest, root: Root, plan_: Plan, fes: list[memo.Compiled],
              warmup: Warmup, events: EventSink, *, stdout: BinaryIO | None = None,
              gc_keep_storage: int | None = None, ref: str = "") -> BuildResult:
    """Solve, assemble, name, export. `stdout`: where outputs without dest write (None:
    refuse them); `gc_keep_storage`: the store's size limit (None: the default)."""
    import asyncio  # (imported by the caller already, without ssl: see startup)

    from pybuild import outputs
    from pybuild.builder.image import assemble, make_index, rfc3339
    from pybuild.digest import Digest
    from pybuild.oci.reference import Reference

    warnings = _report_checks(fes, events)
    secrets = BuildSecrets(await asyncio.to_thread(_read_secrets, req) if req.secrets else ())
    ssh = BuildAgents(_ssh_sockets(req))
    imported = (await asyncio.to_thread(_import_caches, req, root, events)
                if req.cache_from else None)
    solver, solved_all = await _solve(req, root, plan_, fes, warmup, events, secrets, ssh,
                                       imported)
    steps = [StepReport(name=name, reason=reason,
                        layer_seconds=solver.layer_seconds.get(name, 0.0))
             for name, reason in solver.misses.items()]
    memo.mark_ran(plan_.memos[0], bool(steps))
    images = [assemble(root.content, fe.config, solved, source_date_epoch=req.source_date_epoch)
              for fe, solved in zip(fes, solved_all, strict=True)]
    image, config = images[0]
    if len(images) > 1:
        image = make_index(root.content, [d for d, _ in images])
    image = await outputs.annotated(req, root, image)
    facts = outputs.facts_of(req, root, fes, [c for _, c in images])
    created = config.created or rfc3339(time.time())
    named_by_outputs = outputs.named_by_outputs(req)  # they name their own conversion
    tags = [outputs.tag(root, name, image, created) if name not in named_by_outputs
            else Reference.parse(name).familiar for name in req.tags]
    result = BuildResult(image=image, config=config,
                         config_digest=Digest.from_bytes(config.encode()),
                         tags=tuple(tags), steps=tuple(steps), ref=ref,
                         warnings=warnings)
    result = await outputs.run_outputs(req, root, result, events, stdout, facts)
    await asyncio.to_thread(_export_caches, req, root, solver, events)
    _write_result_files(req, result)
    if steps:
        await _collect_garbage(root, events, gc_keep_storage)
    return result


def _report_checks(fes: list[memo.Compiled], events: EventSink) -> tuple[BuildWarning, ...]:
    """The build checks, as events: one platform's (BuildKit reports the first's only)."""
    from pybuild.builder.events import CheckWarning

    warnings = tuple(fes[0].warnings)
    for w in warnings:
        events(CheckWarning(rule=w.rule, short=w.short, description=w.description, url=w.url,
                            filename=w.filename, line=w.line))
    if fes[0].unused_build_args:
        from pybuild.frontend.dockerfile2llb.options import unused_build_args_message

        events(Notice(unused_build_args_message(fes[0].unused_build_args), level="warning"))
    return warnings


async def _solve(req: BuildRequest, root: Root, plan_: Plan, fes: list[memo.Compiled],
                 warmup: Warmup, events: EventSink, secrets: BuildSecrets, ssh: BuildAgents,
                 imported: ImportedCache | None) -> tuple[Solver, list[Solved]]:
    """Every platform's definition solved by one solver (one vertex table: a stage two
    platforms share runs once), in the sandbox."""
    import asyncio

    from pybuild.builder.contexts import Contexts
    from pybuild.builder.executor.runtime import find_runtime
    from pybuild.builder.executor.sandbox import SandboxExecutor
    from pybuild.builder.ops.base import OpContext
    from pybuild.builder.snapshots import Layers, Workspace
    from pybuild.builder.solver import SolvePolicy, Solver
    from pybuild.builder.workspace import build_dir, stale_build_dirs
    from pybuild.cache.store import CacheStore
    from pybuild.context.patterns import PatternMatcher
    from pybuild.context.statcache import StatCache
    from pybuild.context.tree import BuildContext

    idmap = plan_.idmap
    owner = (idmap.uid_extents[0].outside, idmap.gid_extents[0].outside)
    runtime = find_runtime(req.runtime)
    cache = CacheStore(root.cache_db)
    stat_cache = StatCache(root.stat_cache)
    context = BuildContext(str(req.context), PatternMatcher(list(plan_.ignore_patterns))
                           if plan_.ignore_patterns else None, stat_cache,
                           ignore_file=plan_.ignore_name)
    parallelism = req.max_parallelism or default_parallelism()
    try:
        with build_dir(root.tmp) as workdir:
            if os.geteuid() == 0:
                os.chown(workdir, *owner)

            async def clean_leftovers(sb: Any) -> None:
                stale = stale_build_dirs(root.tmp)
                if stale:
                    await sb.remove([str(p) for p in stale])

            daemon = warmup.take_daemon()
            async with SandboxExecutor(idmap, clean_leftovers, daemon=daemon,
                                       workdir=str(workdir), runtime=runtime,
                                       runtime_memo=root.runtime_memo) as sandbox:
                if daemon is not None:
                    sandbox.start_soon()
                try:
                    # Layers are stored uncompressed; exports compress them (once).
                    space = Workspace(workdir=workdir, snapshots=root.snapshots,
                                      compression="none",
                                      source_date_epoch=req.source_date_epoch)
                    ctx = OpContext(
                        store=root.content, executor=sandbox, space=space,
                        layers=Layers(sandbox, root.content, space, parallelism),
                        contexts=Contexts(context, {}), events=events, secrets=secrets,
                        ssh=ssh, sources_dir=root.cache_dir, cache_mounts=root.cache_mounts,
                        run_slots=asyncio.Semaphore(parallelism),
                        refresh_downloads=req.no_cache,
                        http_ca_cert=str(req.registry.ca_cert or "") if req.registry else "")
                    policy = SolvePolicy(no_cache=req.no_cache,
                                         source_date_epoch=req.source_date_epoch,
                                         imported=imported,
                                         dockerfile=os.path.abspath(plan_.dockerfile_path))
                    solver = Solver([fe.definition for fe in fes], ctx=ctx, cache=cache,
                                    policy=policy)
                    solved = await solver.solve()
                finally:
                    await sandbox.settle()
                    if sandbox.started:
                        await sandbox.remove([str(workdir)])
                    else:
                        with contextlib.suppress(OSError):
                            os.rmdir(workdir)
        stat_cache.save()
    finally:
        cache.close()
    return solver, solved


class BuildSecrets:
    """The build's `--secret`s for the solver (a SecretProvider): environment values
    taken when the build starts, files read when a step mounts them."""

    def __init__(self, secrets: tuple[tuple[str, str, str], ...]) -> None:
        self._secrets = {sid: (kind, value) for sid, kind, value in secrets}

    def get(self, secret_id: str) -> bytes | None:
        found = self._secrets.get(secret_id)
        if found is None:
            return None
        kind, value = found
        if kind == "value":
            return value.encode("utf-8", "surrogateescape")
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UserError(f"secret {secret_id}: cannot read {value}: "
                            f"{exc.strerror}") from None


class BuildAgents:
    """The build's `--ssh` agents for the solver (an SSHProvider)."""

    def __init__(self, agents: tuple[tuple[str, str], ...]) -> None:
        self._agents = dict(agents)

    def socket(self, agent_id: str) -> str | None:
        return self._agents.get(agent_id)


def _read_secrets(req: BuildRequest) -> tuple[tuple[str, str, str], ...]:
    """The secrets as the solver takes them, read at the edge as BuildKit's secret store
    reads them (session/secrets/secretsprovider): `env=VAR` is VAR's value ("" when
    unset); neither env nor file means the variable named by the id if it is set, else
    the file of that name; a file must exist when the build starts."""
    out = []
    for s in req.secrets:
        env, file = s.env, s.file
        if not env and not file and s.data is None:
            if s.id in os.environ:
                env = s.id
            else:
                file = s.id
        if env:
            out.append((s.id, "value", os.environ.get(env, "")))
        elif s.data is not None:
            out.append((s.id, "value", s.data.decode("utf-8", "surrogateescape")))
        else:
            try:
                st = os.stat(file)
            except OSError as exc:
                how = "" if s.file else f" (no environment variable {s.id} either)"
                raise UserError(f"--secret id={s.id}: cannot read {file}: "
                                f"{exc.strerror}{how}", code="secret-missing",
                                hint=f"pass --secret id={s.id},src=FILE or "
                                     f"--secret id={s.id},env=VARIABLE") from None
            if stat.S_ISFIFO(st.st_mode):  # `src=<(command)`: read once, here
                out.append((s.id, "value", _read_pipe_secret(s.id, file)))
                continue
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"--secret id={s.id}: {file} is not a regular file "
                                f"({_file_kind(st.st_mode)})", code="bad-flag")
            if st.st_size > MAX_SECRET_SIZE:
                raise UserError(f"--secret id={s.id}: {file} is too big for a secret "
                                f"({st.st_size} bytes; at most {MAX_SECRET_SIZE})",
                                code="bad-flag")
            out.append((s.id, "file", file))
    return tuple(out)


# BuildKit's secretsprovider.MaxSecretSize.
MAX_SECRET_SIZE = 500 * 1024


def read_pipe_secrets(req: BuildRequest) -> BuildRequest:
    """`--secret id=ID,src=<(command)`: a secret whose file is a pipe is read once, now,
    into bytes (a pipe gives its content to one reader only, and both the build record's
    redaction and the build read secrets)."""
    import dataclasses

    from pybuild.request import Secret

    if not any(s.file for s in req.secrets):
        return req
    out = []
    for s in req.secrets:
        try:
            pipe = bool(s.file) and stat.S_ISFIFO(os.stat(s.file).st_mode)
        except OSError:
            pipe = False  # reported where the secrets are read
        out.append(Secret.from_bytes(s.id, _read_pipe_secret(s.id, s.file).encode(
            "utf-8", "surrogateescape")) if pipe else s)
    return dataclasses.replace(req, secrets=tuple(out))


def _read_pipe_secret(sid: str, path: str) -> str:
    """A secret from a pipe (process substitution), at most MAX_SECRET_SIZE bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_SIZE + 1)
    except OSError as exc:
        raise UserError(f"--secret id={sid}: cannot read {path}: {exc.strerror}",
                        code="secret-missing") from None
    if len(data) > MAX_SECRET_SIZE:
        raise UserError(f"--secret id={sid}: {path} is too big for a secret (more than "
                        f"{MAX_SECRET_SIZE} bytes)", code="bad-flag")
    return data.decode("utf-8", "surrogateescape")


def _ssh_sockets(req: BuildRequest) -> tuple[tuple[str, str], ...]:
    out = []
    for agent in req.ssh:
        socket = agent.socket or os.environ.get("SSH_AUTH_SOCK", "")
        if not socket:
            raise UserError(f"--ssh {agent.id}: no socket given and SSH_AUTH_SOCK is not set",
                            hint=f"pass --ssh {agent.id}=SOCKET, or start an ssh-agent")
        out.append((agent.id, socket))
    return tuple(out)


def _import_caches(req: BuildRequest, root: Root, events: EventSink) -> ImportedCache | None:
    """--cache-from: the records of every readable source (see builder/remote_cache.py)."""
    if not req.cache_from:
        return None
    from pybuild.builder.remote_cache import import_caches
    from pybuild.startup import enable_tls

    if any(o.type == "registry" for o in req.cache_from):
        enable_tls()
    return import_caches(req.cache_from, root.content, registry_options=req.registry,
                         warn=lambda text: events(Notice(text, level="warning")))


def _export_caches(req: BuildRequest, root: Root, solver: Solver,
                   events: EventSink) -> None:
    """--cache-to: write the records of this build's steps (mode=min: those whose layers
    are in the result; max: all). A failure fails the build unless ignore-error=true."""
    if not req.cache_to:
        return
    from pybuild.builder.remote_cache import export_cache
    from pybuild.cache.artifact import export_records_for
    from pybuild.cache.store import CacheStore
    from pybuild.startup import enable_tls

    cache = CacheStore(root.cache_db)
    try:
        for option in req.cache_to:
            if option.type == "registry":
                enable_tls()
            keys = solver.export_keys(option.mode)
            records = [r for r in (cache.get(k) for k in keys) if r is not None]
            try:
                try:
                    export_cache(root.content, option, export_records_for(records),
                                 memo_path=root.compression_memo,
                                 registry_options=req.registry)
                except OSError as err:  # the destination: a path that cannot be written
                    where = err.filename or option.where
                    raise UserError(f"--cache-to {option.where}: cannot write {where}: "
                                    f"{err.strerror or err}", code="cache-export") from None
            except PybuildError as exc:
                if option.get("ignore-error") != "true":
                    raise
                events(Notice(f"cache export to {option.where} failed: {exc.message}",
                              level="warning"))
    finally:
        cache.close()


def _write_result_files(req: BuildRequest, result: BuildResult) -> None:
    digest = result.pushed[0].digest if result.pushed else result.image.digest
    for path, text in ((req.iidfile, str(digest)),
                       (req.metadata_file,
                        json.dumps(result.metadata(warnings=req.metadata_warnings), indent=2))):
        if not path:
            continue
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror} (the image was built: "
                            f"{result.image.digest})") from None


async def _collect_garbage(root: Root, events: EventSink, limit: int | None) -> None:
    """Keep the store under its limit (default 20 GB). Runs after the result is named: a
    failure here is a warning, never a lost build."""
    from pybuild.gc import DEFAULT_KEEP_STORAGE, auto_gc

    try:
        await auto_gc(root, DEFAULT_KEEP_STORAGE if limit is None else limit)
    except (PybuildError, OSError) as exc:
        why = exc.message if isinstance(exc, PybuildError) else str(exc)
        events(Notice(f"automatic garbage collection failed ({why}); the build's result "
                      "is kept", level="warning"))


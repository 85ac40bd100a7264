"""`pybuild build`: `docker buildx build`'s flags parsed into a `BuildRequest`, the build
run, its result reported (with -q, only the image ID on stdout). Also what the other
commands share: progress views, the registry flags, stdout for tarballs.

This module is on a no-op rebuild's path: it imports nothing a plain build does not
need (`flags` is loaded only for the flags that need it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, TYPE_CHECKING, Any

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.api import Builder, EventSink, RegistryOptions
    from pybuild.request import BuildRequest

class Progress:
    """An event sink the build's output goes to, closed when the build ends."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def __call__(self, event: Any) -> None:
        self.sink(event)

    def close(self) -> None:
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()


def progress_sink(mode: str, quiet: bool, *, stdout_busy: bool = False) -> Progress:
    """The build's progress view, on stderr (rawjson: on stdout, unless an output writes
    there: then on stderr, where buildx always writes it)."""
    from pybuild.cli.render import JsonProgress, PlainProgress, QuietProgress

    if quiet or mode in ("quiet", "none"):
        return Progress(QuietProgress())
    if mode == "rawjson":
        return Progress(JsonProgress(sys.stderr if stdout_busy else sys.stdout))
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        from pybuild.cli.tty import TtyProgress

        return Progress(TtyProgress())
    return Progress(PlainProgress())


def stdout_for_outputs() -> Any:
    """Where a tarball output without dest goes: stdout, unless it is a terminal."""
    return None if sys.stdout.isatty() else sys.stdout.buffer


def registry_options(args: argparse.Namespace) -> RegistryOptions | None:
    """The registry flags and environment as RegistryOptions (registry_commands owns it)."""
    from pybuild.cli.registry_commands import registry_options as options

    return options(args)


# buildx flags pybuild has no equivalent for yet: refused by name, with the reason.
REFUSED_BUILD_FLAGS = {
    "--allow": "entitlements (network.host, security.insecure) are not implemented",
    "--cgroup-parent": "RUN steps run in the sandbox's own cgroup",
    "--policy": "build policies are not implemented",
    "--resource": "RUN steps get no per-build resource limits",
    "--memory": "RUN steps get no per-build memory limit",
    "--memory-swap": "RUN steps get no per-build swap limit",
    "--cpu-shares": "RUN steps get no per-build CPU limits",
    "--cpu-period": "RUN steps get no per-build CPU limits",
    "--cpu-quota": "RUN steps get no per-build CPU limits",
    "--cpuset-cpus": "RUN steps get no per-build CPU limits",
    "--cpuset-mems": "RUN steps get no per-build CPU limits",
    "--isolation": "deprecated with BuildKit; RUN steps always run in the sandbox",
    "--security-opt": "deprecated with BuildKit (use RUN --security)",
    "--squash": "removed with BuildKit: squash with a multi-stage Dockerfile",
    "--compress": "the context is read in place, never sent",
}


class Refused(argparse.Action):
    """A buildx flag pybuild does not implement: an error naming it, never ignored."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        flag = self.option_strings[0]
        raise UserError(f"{flag} is not supported: {REFUSED_BUILD_FLAGS[flag]}",
                        code="unsupported-flag", hint=f"drop {flag}; pybuild refuses flags "
                        "it cannot honour rather than ignore them")


def add_arguments(b: argparse.ArgumentParser, registry_flags: Any) -> None:
    b.add_argument("context", metavar="CONTEXT",
                   help="a directory; a git URL (https://host/repo.git#REF:DIR, "
                        "git@host:repo.git); an http(s) URL of a tarball or a Dockerfile; "
                        "or - (stdin: a Dockerfile, or a tar archive of a context)")
    b.add_argument("-f", "--file", default="",
                   help="the Dockerfile: a path (default: CONTEXT/Dockerfile), an http(s) "
                        "URL, or - for stdin")
    b.add_argument("-t", "--tag", action="append", default=[],
                   help="name the result in the local image store (repeatable)")
    b.add_argument("--build-arg", action="append",
                   help="set a build-time variable KEY=VALUE (KEY alone: from the "
                        "environment, if set)")
    b.add_argument("--target", default="", help="build this stage (default: the last)")
    b.add_argument("--platform", action="append", default=[],
                   help="target platform(s), e.g. linux/arm64 or local (this host's); "
                        "repeatable and comma-separated")
    b.add_argument("--label", action="append",
                   help="set an image label KEY=VALUE (KEY alone: an empty value)")
    b.add_argument("--annotation", action="append", default=[],
                   help="add an annotation [TYPE[PLATFORM][,TYPE...]:]KEY=VALUE to every "
                        "image output and the stored result; TYPE is manifest (the default), "
                        "index, manifest-descriptor or index-descriptor, e.g. "
                        "manifest[linux/arm64]:KEY=VALUE")
    b.add_argument("-o", "--output", action="append", default=[],
                   help="export the result: type=oci|docker|local|tar|image|registry|"
                        "cacheonly,dest=PATH,...; a bare PATH is type=local; type=docker "
                        "without dest loads into podman or docker, as --load; image outputs "
                        "take name, compression, compression-level, force-compression, "
                        "oci-mediatypes (type=docker: false by default), rewrite-timestamp "
                        "and annotation[-TYPE][[PLATFORM]].KEY; type=local leaves out "
                        "device nodes, set-uid/set-gid bits and file capabilities unless "
                        "privileged-files=true")
    b.add_argument("--no-cache", action="store_true", help="do not use the cache")
    b.add_argument("--no-cache-filter", action="append", default=[],
                   help="do not use the cache for these stages")
    b.add_argument("--network", default="default", choices=["default", "none", "host"],
                   help="default network mode for RUN steps")
    b.add_argument("--runtime", default="", choices=["", "crun", "runc"],
                   help="OCI runtime for RUN steps (default: crun if installed, else runc)")
    b.add_argument("--progress", default="auto",
                   choices=["auto", "tty", "plain", "rawjson", "quiet", "none"],
                   help="progress output on stderr (default: auto; rawjson goes to stdout "
                        "unless an output does)")
    b.add_argument("-q", "--quiet", action="store_true",
                   help="no progress; print only the image ID on stdout")
    b.add_argument("--iidfile", default="",
                   help="write the image ID (the config digest; an index's digest for "
                        "multi-platform results) to this file")
    b.add_argument("--metadata-file", default="",
                   help="write build result metadata (digests, names) as JSON, like buildx")
    b.add_argument("--explain", action="store_true",
                   help="after the build, list every step that ran and why it was not cached")
    b.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "uncompressed"],
                   help="layer compression of -o/--push outputs (default: gzip; the local "
                        "store keeps layers uncompressed, as Docker's and Podman's do)")
    b.add_argument("--secret", action="append", default=[],
                   help="expose a secret to RUN --mount=type=secret: id=ID,src=FILE, "
                        "id=ID,env=VAR, or id=ID (the variable ID if set, else the file ID); "
                        "never stored in the image or the cache")
    b.add_argument("--ssh", action="append", default=[],
                   help="forward an SSH agent to RUN --mount=type=ssh: default "
                        "($SSH_AUTH_SOCK), ID=SOCKET, or ID=KEYFILE[,KEYFILE...] (the keys "
                        "are served by a private ssh-agent for the build's duration)")
    b.add_argument("--build-context", action="append", default=[],
                   help="named context NAME=DIR|docker-image://REF|oci-layout://DIR@DIGEST|"
                        "GIT-URL|HTTPS-URL; overrides FROM NAME and COPY --from=NAME")
    b.add_argument("--cache-from", action="append", default=[],
                   help="import build cache: type=local,src=DIR | type=registry,ref=REF | "
                        "REF (steps found there are not run; their layers are fetched)")
    b.add_argument("--cache-to", action="append", default=[],
                   help="export build cache: type=local,dest=DIR | type=registry,ref=REF, "
                        "with mode=min (default: the result's steps) or mode=max (all), "
                        "compression=gzip|zstd|uncompressed, ignore-error=true")
    b.add_argument("--push", action="store_true",
                   help="push the result to the registry of each -t name")
    b.add_argument("--load", metavar="[=ENGINE]", default=None,
                   help="also load the result into podman or docker (--load: the one "
                        "installed, podman first; --load=podman, --load=docker)")
    b.add_argument("--pull", metavar="[=POLICY]", default="missing",
                   help="--pull (or --pull=true, always): fetch every base image from its "
                        "registry again; --pull=false or missing (default): only those the "
                        "store lacks; never: none")
    b.add_argument("--add-host", action="append", default=[],
                   help="add HOST:IP to RUN steps' /etc/hosts (not supported yet: refused)")
    b.add_argument("--shm-size", default="",
                   help="size of RUN steps' /dev/shm (not supported yet: refused)")
    b.add_argument("--ulimit", action="append", default=[],
                   help="RUN steps' ulimits NAME=SOFT[:HARD] (not supported yet: refused)")
    b.add_argument("--rm", "--force-rm", action="store_true", dest="rm",
                   help="accepted, as buildx does: RUN containers are always removed")
    registry_flags(b)
    b.add_argument("--call", default="build", metavar="NAME[,format=json]",
                   help="what to evaluate instead of building: check (the build checks; "
                        "exit 1 when they find something, unless ignorestatus=true), "
                        "outline (the build args, secrets and SSH ids a target uses), "
                        "targets (the stages); default build. Nothing is built, exported "
                        "or tagged")
    b.add_argument("--print", dest="call", help=argparse.SUPPRESS)  # buildx's old name
    b.add_argument("--check", default=None, metavar="",
                   help='shorthand for "--call=check"')
    b.add_argument("--max-parallelism", type=int, default=0,
                   help="RUN steps at once (default: 4 x the number of CPUs)")
    for flag in REFUSED_BUILD_FLAGS:
        b.add_argument(flag, action=Refused, help=argparse.SUPPRESS)


def _stdin() -> IO[bytes]:
    return sys.stdin.buffer


def _stdin_inputs(args: argparse.Namespace) -> tuple[Any, str, bytes | None]:
    """`-f -` and context `-` as buildx reads them: a context `-` is a tar archive (plain
    or compressed) or else a Dockerfile, told apart by its first bytes."""
    from pybuild.api import Prefixed, is_archive, read_head
    from pybuild.request import TarContext

    context: Any = args.context
    dockerfile, data = args.file, None
    if args.context == "-" and args.file == "-":
        raise UserError("invalid argument: can't use stdin for both build context and "
                        "dockerfile", code="bad-flag")
    if args.file == "-":
        data = _stdin().read()
        dockerfile = ""
    elif args.context == "-":
        stream = _stdin()
        head = read_head(stream)
        if not head:
            raise UserError("stdin is empty: expected a Dockerfile or a tar archive of the "
                            "context", code="bad-flag")
        if is_archive(head):
            import io

            context = TarContext(stream=io.BufferedReader(Prefixed(head, stream)))
        else:
            if args.file:
                raise UserError("ambiguous Dockerfile source: both stdin and -f name a "
                                "Dockerfile", code="bad-flag")
            import io

            context = TarContext(stream=io.BytesIO())  # an empty context
            data = head + stream.read()
    return context, dockerfile, data


def parse_build_args(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    """`--build-arg KEY=VALUE`; `--build-arg KEY` takes KEY from the environment, or is
    left out when it is not set (buildx's `listToMap(buildArgs, true)`)."""
    out: dict[str, str] = {}
    for v in values or ():
        key, eq, value = v.partition("=")
        if not key:
            raise UserError(f"invalid --build-arg {v!r}: empty key", code="bad-flag")
        if eq:
            out[key] = value
        elif key in os.environ:
            out[key] = os.environ[key]
    return tuple(out.items())


def parse_labels(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    """`--label KEY=VALUE`; `--label KEY` is KEY with an empty value (buildx's
    `listToMap(labels, false)`), never a value from the environment."""
    out: dict[str, str] = {}
    for v in values or ():
        key, _, value = v.partition("=")
        if not key:
            raise UserError(f"invalid --label {v!r}: empty key", code="bad-flag")
        out[key] = value
    return tuple(out.items())


def build_request(args: argparse.Namespace) -> BuildRequest:
    from pybuild.api import parse_output
    from pybuild.request import BuildRequest

    if (args.platform or args.secret or args.ssh or args.build_context or args.cache_from
            or args.cache_to or args.annotation or args.add_host or args.ulimit
            or args.load is not None or args.pull != "missing"):
        from pybuild.cli import flags
    build_args = parse_build_args(args.build_arg)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    for key, value in build_args:
        if key == "SOURCE_DATE_EPOCH":
            epoch = value
    outputs = [parse_output(x) for x in args.output]
    if args.push:  # buildx: --push is -o type=image,push=true for the -t names
        if not args.tag:
            raise UserError("--push needs at least one -t NAME to push to")
        outputs.append(parse_output("type=image,push=true"))
    cache_from: tuple[Any, ...] = ()
    cache_to: tuple[Any, ...] = ()
    if args.cache_from or args.cache_to:
        from pybuild.api import parse_cache_option

        cache_from = tuple(parse_cache_option(x, flag="--cache-from") for v in args.cache_from
                           for x in flags.check_cache_option(v, "--cache-from"))
        cache_to = tuple(parse_cache_option(x, flag="--cache-to") for v in args.cache_to
                         for x in flags.check_cache_option(v, "--cache-to"))
    shm_size = None
    if args.shm_size:
        from pybuild.units import parse_ram_size

        shm_size = parse_ram_size(args.shm_size, flag="--shm-size")
    context, dockerfile, data = (_stdin_inputs(args) if "-" in (args.context, args.file)
                                 else (args.context, args.file, None))
    return BuildRequest(
        context=context, dockerfile=dockerfile, dockerfile_data=data, tags=tuple(args.tag),
        build_args=build_args, target=args.target,
        platforms=flags.parse_platforms(args.platform) if args.platform else (),
        labels=parse_labels(args.label), no_cache=args.no_cache,
        no_cache_filter=tuple(args.no_cache_filter), network=args.network,
        runtime=args.runtime, compression=args.compression,
        max_parallelism=args.max_parallelism,
        source_date_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        outputs=tuple(outputs),
        secrets=tuple(flags.parse_secret(x) for x in args.secret),
        ssh=tuple(flags.parse_ssh(x) for x in args.ssh),
        named_contexts=tuple(flags.parse_build_context(x) for x in args.build_context),
        registry=registry_options(args),
        pull=flags.parse_pull(args.pull) if args.pull != "missing" else "missing",
        cache_from=cache_from, cache_to=cache_to,
        iidfile=args.iidfile, metadata_file=args.metadata_file,
        metadata_warnings=os.environ.get("BUILDX_METADATA_WARNINGS", "").lower() in ("1",
                                                                                   "true"),
        load=flags.parse_load(args.load) if args.load is not None else None,
        annotations=tuple(a for x in args.annotation for a in flags.parse_annotation(x)),
        extra_hosts=tuple(h for x in args.add_host for h in flags.parse_add_host(x)),
        shm_size=shm_size,
        ulimits=tuple(flags.parse_ulimit(x) for x in args.ulimit),
    )


def _writes_stdout(req: BuildRequest) -> bool:
    return any(getattr(o, "dest", "") in (None, "-") for o in req.outputs)


def _call(args: argparse.Namespace) -> Any:
    """The parsed `--call` (`--check` sets it, as buildx's callAlias), or None to build."""
    text = args.call
    if args.check is not None:
        from pybuild.cli.flags import go_bool

        value = go_bool(args.check)
        if value is None:
            raise UserError(f"invalid --check value {args.check!r}: use --check or "
                            "--check=true|false", code="bad-flag")
        if value:
            text = "check"
    if text in ("", "build"):
        return None
    from pybuild.cli.call_command import parse_call

    return parse_call(text)


def build(args: argparse.Namespace, builder: Builder) -> int:
    call = _call(args)
    if call is not None:
        from pybuild.cli.call_command import run_call

        return run_call(args, builder, call)
    req = build_request(args)
    progress = progress_sink(args.progress, args.quiet, stdout_busy=_writes_stdout(req))
    try:
        result = builder.build(req, on_event=progress, stdout=stdout_for_outputs(),
                               handle_sigterm=True)
    finally:
        progress.close()
    if args.progress not in ("rawjson", "quiet") and not args.quiet:
        from pybuild.cli.render import render_check_summary

        render_check_summary([w.short for w in result.warnings], sys.stderr)
    for pushed in result.pushed:
        print(f"pushed {pushed}", file=sys.stderr)
    if args.explain:
        if not result.steps:
            print("explain: every step was cached", file=sys.stderr)
        for step in result.steps:
            print(f"explain: {step.name}: {step.reason}", file=sys.stderr)
    if args.quiet:
        print(result.image_id)
    else:
        names = ", ".join(result.tags) if result.tags else "(untagged)"
        print(f"built {names} {result.digest} (image ID {str(result.image_id)[7:19]})",
              file=sys.stderr)
    return 0

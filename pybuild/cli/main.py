"""`pybuild` command line. Only this package prints, reads argv or exits.

Imports are lazy so that `pybuild --help` and no-op rebuilds start fast, and so that a
build starts its sandbox daemon before loading anything (see `Prestart`).
"""

from __future__ import annotations

import os
import sys

from pybuild import __version__

TYPE_CHECKING = False  # (not typing's: importing typing costs start-up time)
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pybuild.api import Builder
    from pybuild.startup import Prestart

HELP = """pybuild: build OCI container images from Dockerfiles, without a daemon or root.

Common commands:
  pybuild build -t app:1 .          build ./Dockerfile into the local image store
  pybuild images                     list the local image store
  pybuild inspect app:1              manifest + config of an image, as JSON
  pybuild export app:1 -o type=oci,dest=app.tar
  pybuild tag app:1 app:latest       add a name;  pybuild rmi app:1  removes one
"""


def _kv_list(values: list[str] | None, what: str) -> tuple[tuple[str, str], ...]:
    from pybuild.errors import PybuildError

    out = []
    for v in values or []:
        key, eq, value = v.partition("=")
        if not key:
            raise PybuildError(f"invalid {what} {v!r}: expected KEY=VALUE")
        if not eq:
            env = os.environ.get(key)
            if env is None:
                continue  # buildx: `--build-arg FOO` takes FOO from the environment if set
            value = env
        out.append((key, value))
    return tuple(out)


COMMANDS = ("build", "images", "inspect", "tag", "rmi", "export", "load", "debug", "prune",
            "du", "pull", "push", "login", "logout", "imagetools", "history")


def _registry_flags(p: argparse.ArgumentParser) -> None:
    from pybuild.cli.registry_commands import registry_flags

    registry_flags(p, mirrors=True)


def _wanted(argv: list[str]) -> str | None:
    """The subcommand named on the command line, so only its parser is built (start-up
    time matters for no-op rebuilds); None builds them all (help, errors)."""
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        if arg == "--root":
            skip_next = True
            continue
        if arg.startswith("-"):
            if arg in ("-h", "--help", "--version"):
                return None
            continue
        return arg if arg in COMMANDS else None
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    import argparse

    class Ignored(argparse.ArgumentParser):
        """Stands for the parser of a subcommand that is not being run: it records nothing
        (a real one costs its arguments and gettext look-ups, at every start)."""

        def __init__(self) -> None:
            pass

        def add_argument(self, *args: Any, **kwargs: Any) -> Any:
            return None

        def add_subparsers(self, **kwargs: Any) -> Any:
            return self

        def add_parser(self, *args: Any, **kwargs: Any) -> Any:
            return self

    ignored = Ignored()
    p = argparse.ArgumentParser(prog="pybuild", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pybuild {__version__}")
    p.add_argument("--root", help="pybuild state directory (default: $PYBUILD_ROOT, "
                   "/var/lib/pybuild for root, ~/.local/share/pybuild for a user)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    real_add = sub.add_parser

    # --root and --debug are accepted after the subcommand too.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return ignored
        return real_add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    b = sub.add_parser("build", help="build an image from a Dockerfile",
                       description="Build an image from a Dockerfile and a context directory, "
                       "like `docker buildx build`.")
    b.add_argument("context", help="build context directory")
    b.add_argument("-f", "--file", default="", help="Dockerfile path (default: CONTEXT/Dockerfile)")
    b.add_argument("-t", "--tag", action="append", default=[],
                   help="name the result in the local image store (repeatable)")
    b.add_argument("--build-arg", action="append", help="set a build-time variable KEY=VALUE")
    b.add_argument("--target", default="", help="build this stage (default: the last)")
    b.add_argument("--platform", default="", help="target platform, e.g. linux/arm64")
    b.add_argument("--label", action="append", help="set an image label KEY=VALUE")
    b.add_argument("-o", "--output", action="append", default=[],
                   help="export the result: type=oci|docker|local|tar,dest=PATH[,tar=false]; "
                        "type=local leaves out device nodes, set-uid/set-gid bits and file "
                        "capabilities unless privileged-files=true")
    b.add_argument("--no-cache", action="store_true", help="do not use the cache")
    b.add_argument("--no-cache-filter", action="append", default=[],
                   help="do not use the cache for these stages")
    b.add_argument("--network", default="default", choices=["default", "none", "host"],
                   help="default network mode for RUN steps")
    b.add_argument("--runtime", default="", choices=["", "crun", "runc"],
                   help="OCI runtime for RUN steps (default: crun if installed, else runc)")
    b.add_argument("--progress", default="auto",
                   choices=["auto", "tty", "plain", "rawjson", "quiet"],
                   help="progress output (default: auto)")
    b.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")
    b.add_argument("--iidfile", default="", help="write the image digest to this file")
    b.add_argument("--metadata-file", default="",
                   help="write build result metadata (digests, names) as JSON, like buildx")
    b.add_argument("--explain", action="store_true",
                   help="after the build, list every step that ran and why it was not cached")
    b.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "uncompressed"],
                   help="layer compression of -o/--push outputs (default: gzip; the local "
                        "store keeps layers uncompressed, as Docker's and Podman's do)")
    b.add_argument("--secret", action="append", default=[],
                   help="expose a secret to RUN --mount=type=secret: id=ID,src=FILE or "
                        "id=ID,env=VAR (never stored in the image or the cache)")
    b.add_argument("--ssh", action="append", default=[],
                   help="forward an SSH agent to RUN --mount=type=ssh: default or ID=SOCKET")
    b.add_argument("--build-context", action="append", default=[],
                   help="named context NAME=DIR|docker-image://REF|oci-layout://DIR@DIGEST; "
                        "overrides FROM NAME and COPY --from=NAME")
    b.add_argument("--cache-from", action="append", default=[],
                   help="import build cache: type=local,src=DIR | type=registry,ref=REF | "
                        "REF (steps found there are not run; their layers are fetched)")
    b.add_argument("--cache-to", action="append", default=[],
                   help="export build cache: type=local,dest=DIR | type=registry,ref=REF, "
                        "with mode=min (default: the result's steps) or mode=max (all), "
                        "compression=gzip|zstd|uncompressed, ignore-error=true")
    b.add_argument("--push", action="store_true",
                   help="push the result to the registry of each -t name")
    b.add_argument("--pull", default="missing", choices=["missing", "never"],
                   help="pull base images missing from the store (default) or never")
    _registry_flags(b)
    b.add_argument("--max-parallelism", type=int, default=0,
                   help="RUN steps at once (default: 4 x the number of CPUs)")

    sub.add_parser("images", help="list images in the local store")

    i = sub.add_parser("inspect", help="show an image's manifest and config as JSON")
    i.add_argument("image")
    i.add_argument("--platform", default="", help="for a multi-platform image")

    t = sub.add_parser("tag", help="give an image another name")
    t.add_argument("source")
    t.add_argument("target")

    r = sub.add_parser("rmi", help="remove image names from the local store")
    r.add_argument("images", nargs="+")

    from pybuild.cli import registry_commands  # pull, push, login, logout, imagetools

    registry_commands.add_parsers(sub)

    e = sub.add_parser("export", help="write a stored image out (OCI layout, tarballs, ...)")
    e.add_argument("image")
    e.add_argument("-o", "--output", action="append", required=True,
                   help="type=oci|docker|local|tar,dest=PATH[,tar=false]; type=local leaves "
                        "out device nodes, set-uid/set-gid bits and file capabilities unless "
                        "privileged-files=true")
    e.add_argument("--platform", default="", help="for a multi-platform image")

    ld = sub.add_parser("load", help="import an OCI layout/archive or docker archive")
    ld.add_argument("-i", "--input", required=True, help="layout directory or tarball")
    ld.add_argument("-t", "--tag", action="append", default=[],
                    help="name(s) for the image (default: the name recorded in the archive)")

    d = sub.add_parser("debug", help="inspect pybuild's view of a Dockerfile")
    dsub = d.add_subparsers(dest="debug_command", metavar="WHAT")
    a = dsub.add_parser("ast", help="print the parsed Dockerfile in BuildKit's dump format")
    a.add_argument("dockerfile")
    dg = dsub.add_parser("dag", help="print the op DAG of a build as JSON or Graphviz dot")
    dg.add_argument("context")
    dg.add_argument("-f", "--file", default="")
    dg.add_argument("--build-arg", action="append")
    dg.add_argument("--target", default="")
    dg.add_argument("--platform", default="")
    dg.add_argument("--format", default="json", choices=["json", "dot"])

    gc = sub.add_parser("prune", help="remove build cache and unused blobs",
                        description="Remove build cache records and every blob no image "
                        "and no remaining record uses. Without options, only what nothing "
                        "references (and is older than an hour) goes. After each build "
                        "pybuild prunes automatically down to $PYBUILD_GC_KEEP_STORAGE "
                        "(default 20GB), least recently used first. --all and --filter "
                        "until= also remove cache mounts (RUN --mount=type=cache) and "
                        "downloaded ADD sources that no running build holds.")
    gc.add_argument("-a", "--all", action="store_true",
                    help="drop all build cache records, cache mounts and downloads")
    gc.add_argument("--filter", action="append", default=[],
                    help="until=DURATION: drop records, cache mounts and downloads unused "
                         "for longer (e.g. until=24h)")
    gc.add_argument("--keep-storage", default="",
                    help="drop least recently used records until the store is under SIZE")
    sub.add_parser("du", help="show what the image store and build cache hold")
    if only in (None, "history"):
        from pybuild.cli import history_commands

        history_commands.add_parser(sub)
    return p


_INTERRUPTED = "pybuild: interrupted; nothing half-written was kept"


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C can come before _main's own handler is in place (while modules load).
    try:
        return _main_with_prestart(argv)
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        return 130


def _main_with_prestart(argv: list[str] | None) -> int:
    if argv is not None:
        return _main(argv)
    argv = sys.argv[1:]
    prestart = None
    if _wanted(argv) == "build":
        from pybuild.startup import Prestart

        prestart = Prestart(argv)
    try:
        return _main(argv, prestart)
    finally:
        if prestart is not None:
            prestart.close()
        # The process exits next. Finalization's last garbage collection would walk every
        # object of the loaded builder (~15 ms) for cycles that exiting frees anyway.
        import gc

        gc.freeze()


def _main(argv: list[str], prestart: Prestart | None = None) -> int:
    from pybuild.errors import PybuildError

    parser = _parser(_wanted(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return _dispatch(args, parser, prestart)
    except PybuildError as exc:
        from pybuild.cli.render import render_error

        render_error(exc, sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: one line, the traceback only on --debug
        if args.debug:
            import traceback

            traceback.print_exc()
        else:
            print(f"pybuild: internal error: {type(exc).__name__}: {exc}\n"
                  "run with --debug for the traceback", file=sys.stderr)
        return 2
    except BaseException as exc:
        # asyncio is imported only by commands that run it (start-up time): a cancellation
        # (SIGTERM, see api._terminable) can only come from it.
        asyncio = sys.modules.get("asyncio")
        if asyncio is None or not isinstance(exc, asyncio.CancelledError):
            raise
        print("pybuild: terminated; running steps were stopped and nothing half-written "
              "was kept", file=sys.stderr)
        return 143


def _builder(args: argparse.Namespace, prestart: Prestart | None = None) -> Builder:
    from pybuild.api import Builder

    return Builder(args.root or None,
                   warmup=prestart.warmup() if prestart is not None else None)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser,
              prestart: Prestart | None = None) -> int:
    from pybuild.cli import commands

    match args.command:
        case "build":
            return commands.build(args, _builder(args, prestart),
                                  _kv_list(args.build_arg, "build arg"),
                                  _kv_list(args.label, "label"))
        case "images":
            return commands.images(_builder(args))
        case "inspect":
            return commands.inspect(_builder(args), args.image, args.platform)
        case "tag":
            return commands.tag(_builder(args), args.source, args.target)
        case "rmi":
            return commands.rmi(_builder(args), args.images)
        case "export":
            return commands.export(_builder(args), args.image, args.output, args.platform)
        case "pull" | "push" | "login" | "logout" | "imagetools":
            from pybuild.cli import registry_commands

            return registry_commands.run(args, lambda: _builder(args), parser)
        case "load":
            return commands.load(_builder(args), args.input, args.tag)
        case "prune":
            return commands.prune(_builder(args), args.all, args.filter, args.keep_storage)
        case "du":
            return commands.du(_builder(args))
        case "history":
            from pybuild.cli import history_commands

            return history_commands.run(args, parser)
        case "debug":
            if args.debug_command == "ast":
                return commands.debug_ast(args.dockerfile)
            if args.debug_command == "dag":
                return commands.debug_dag(args, _builder(args),
                                          _kv_list(args.build_arg, "build arg"))
            parser.parse_args(["debug", "--help"])
    return 0

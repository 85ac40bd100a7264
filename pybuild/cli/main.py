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
    from collections.abc import Iterator
    from typing import Any

    from pybuild.api import Builder, Prestart

HELP = """pybuild: build OCI container images from Dockerfiles, without a daemon or root.

Common commands:
  pybuild build -t app:1 .          build ./Dockerfile into the local image store
  pybuild images                     list the local image store
  pybuild inspect app:1              manifest + config of an image, as JSON
  pybuild export app:1 -o type=oci,dest=app.tar
  pybuild tag app:1 app:latest       add a name;  pybuild rmi app:1  removes one
  pybuild history app:1              the image's history (also `pybuild image history`)
  pybuild save -o app.tar app:1      a docker archive;  pybuild load -i app.tar  reads one

`pybuild image ls|inspect|tag|rm|history|save|load|import|pull|push|prune` are docker's
long forms of the same commands. IMAGE arguments take a name, an image ID (as `images` and
`build -q` show it) or a digest.
"""


COMMANDS = ("build", "images", "inspect", "tag", "rmi", "history", "export",
            "load", "save", "import", "debug", "prune", "du", "pull", "push", "login",
            "logout", "imagetools", "version", "completion", "man")
# `pybuild history`'s own subcommands (build records, cli/history_commands.py); any other
# word after `history` names an image, as in `docker history IMAGE`.
BUILD_HISTORY_COMMANDS = ("ls", "inspect", "logs", "export", "import", "rm", "open", "trace")
# `docker image SUB` -> the top-level command it is.
IMAGE_SUBCOMMANDS = {"ls": "images", "list": "images", "inspect": "inspect", "tag": "tag",
                     "rm": "rmi", "remove": "rmi", "history": "history", "save": "save",
                     "load": "load", "import": "import", "pull": "pull", "push": "push",
                     "prune": "prune"}


def _registry_flags(p: argparse.ArgumentParser) -> None:
    from pybuild.cli.registry_commands import registry_flags

    registry_flags(p, mirrors=True)


def _command_index(argv: list[str]) -> int:
    """The position of the subcommand in argv (-1: none)."""
    skip_next = False
    for i, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        if arg == "--root":
            skip_next = True
            continue
        if arg.startswith("-"):
            continue
        return i
    return -1


def _rewrite(argv: list[str]) -> list[str]:
    """docker's spellings argparse cannot take as they are: `image SUB` (docker image
    ls...), `history IMAGE` beside the build-record commands, and build's `--pull` and
    `--load` and `--check`, which take a value only after `=` (a bare one, or podman's
    `--pull never`)."""
    i = _command_index(argv)
    if i < 0:
        return argv
    command = argv[i]
    if command == "image" and i + 1 < len(argv) and argv[i + 1] in IMAGE_SUBCOMMANDS:
        argv = [*argv[:i], IMAGE_SUBCOMMANDS[argv[i + 1]], *argv[i + 2:]]
        command = argv[i]
    if command == "history":
        rest = argv[i + 1:]
        j = _command_index(rest)
        if j >= 0 and rest[j] not in BUILD_HISTORY_COMMANDS:
            return [*argv[:i], "image-history", *rest]
        return argv
    if command != "build":
        return argv
    out = argv[:i + 1]
    after: Iterator[str] = iter(argv[i + 1:])
    for arg in after:
        if arg == "--":
            out += [arg, *after]
            break
        if arg == "--load":
            out.append("--load=auto")
        elif arg == "--check":  # buildx's NoOptDefVal: a bare --check is --check=true
            out.append("--check=true")
        elif arg == "--pull":
            nxt = next(after, None)
            if nxt in ("always", "missing", "never"):  # podman's `--pull POLICY`
                out.append(f"--pull={nxt}")
            else:
                out.append("--pull=true")
                if nxt is not None:
                    out.append(nxt)
        else:
            out.append(arg)
    return out


def _wanted(argv: list[str]) -> str | None:
    """The subcommand named on the command line, so only its parser is built (start-up
    time matters for no-op rebuilds); None builds them all (help, errors)."""
    if any(arg in ("-h", "--help", "--version") for arg in argv[:max(0, _command_index(
            argv))] or ()) or any(arg in ("-h", "--help") for arg in argv):
        return None
    i = _command_index(argv)
    if i < 0:
        return None
    return argv[i] if argv[i] in (*COMMANDS, "image-history") else None


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
                       description="Build an image from a Dockerfile and a context, like "
                       "`docker buildx build`. The result is named in pybuild's image store "
                       "(-t); -o exports it, --push pushes it, --load hands it to podman or "
                       "docker.")
    if b is not ignored:
        from pybuild.cli.build_command import add_arguments

        add_arguments(b, _registry_flags)

    im = sub.add_parser("images", help="list images in the local store",
                        description="List the image store, as `docker images`: newest "
                        "first; IMAGE ID is the config digest (the same in the store, in "
                        "archives and in registries), CREATED the image's creation time.")
    im.add_argument("repository", nargs="?", default="", metavar="REPOSITORY[:TAG]",
                    help="only images of this repository (glob patterns allowed)")
    im.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    im.add_argument("-a", "--all", action="store_true",
                    help="accepted, as docker: pybuild keeps no intermediate images")
    im.add_argument("--digests", action="store_true", help="show the manifest digests")
    im.add_argument("--no-trunc", action="store_true", help="do not shorten IDs")
    im.add_argument("--filter", action="append", default=[],
                    help="reference=PATTERN, label=KEY[=VALUE], dangling=true|false")
    im.add_argument("--format", default="",
                    help="table (default), json, or a Go template: {{.Repository}}, "
                         "{{.Tag}}, {{.ID}}, {{.Digest}}, {{.CreatedAt}}, {{.CreatedSince}}, "
                         "{{.Size}}, {{.Platforms}}, {{json .}}")

    i = sub.add_parser("inspect", help="show images' manifest and config as JSON",
                       description="Show an image as JSON: docker's `image inspect` fields "
                       "(Id, RepoTags, Config, ...) and pybuild's (descriptor, manifest, "
                       "config). IMAGE is a name, an image ID or a digest (or a unique "
                       "prefix of one).")
    i.add_argument("images", nargs="+", metavar="IMAGE")
    i.add_argument("--platform", default="", help="for a multi-platform image")
    i.add_argument("-f", "--format", default="",
                   help="json (an array, as docker), or a Go template such as "
                        "'{{.Id}}' or '{{json .Config}}'")
    i.add_argument("--type", default="image", choices=["image"],
                   help="what to inspect (pybuild knows images only)")

    t = sub.add_parser("tag", help="give an image another name")
    t.add_argument("source", metavar="SOURCE", help="a name, an image ID or a digest")
    t.add_argument("target", metavar="TARGET")

    r = sub.add_parser("rmi", help="remove image names from the local store",
                       description="Remove names from the image store (the blobs go with "
                       "the next prune). An image ID removes the image's only name, or with "
                       "-f all of them.")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("-f", "--force", action="store_true",
                   help="remove every name of an image given by ID; images that are not "
                        "there are not an error")
    r.add_argument("--no-prune", action="store_true",
                   help="accepted, as docker: rmi never prunes (pybuild prune does)")

    h = sub.add_parser("image-history", prog="pybuild history",
                       description="Show an image's history, as `docker history IMAGE` "
                       "(also `pybuild image history IMAGE`).")
    # Reached as `history IMAGE` (see _rewrite): not listed under its internal name.
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "image-history"]
    h.add_argument("image", metavar="IMAGE")
    h.add_argument("-H", "--human", default=True,
                   type=lambda v: v.lower() not in ("false", "0", "f"),
                   help="sizes and dates in human form (default true; --human=false)")
    h.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    h.add_argument("--no-trunc", action="store_true", help="do not shorten the output")
    h.add_argument("--format", default="", help="table (default), json, or a Go template: "
                   "{{.ID}}, {{.CreatedSince}}, {{.CreatedAt}}, {{.CreatedBy}}, {{.Size}}, "
                   "{{.Comment}}")
    h.add_argument("--platform", default="", help="for a multi-platform image")

    from pybuild.cli import registry_commands  # pull, push, login, logout, imagetools

    registry_commands.add_parsers(sub)

    e = sub.add_parser("export", help="write a stored image out (OCI layout, tarballs, ...)")
    e.add_argument("image", help="a name, an image ID or a digest")
    e.add_argument("-o", "--output", action="append", required=True,
                   help="type=oci|docker|local|tar,dest=PATH[,tar=false]; type=local leaves "
                        "out device nodes, set-uid/set-gid bits and file capabilities unless "
                        "privileged-files=true")
    e.add_argument("--platform", default="", help="for a multi-platform image")

    sv = sub.add_parser("save", help="write images to one docker archive (docker save)",
                        description="Write one or more images to a docker archive that "
                        "`docker load`, `podman load` and `pybuild load` read (also an OCI "
                        "layout), layers uncompressed as docker save writes them.")
    sv.add_argument("images", nargs="+", metavar="IMAGE")
    sv.add_argument("-o", "--output", default="",
                    help="the archive (default: stdout, if it is not a terminal)")
    sv.add_argument("--platform", default="",
                    help="the platform of multi-platform images (default: this host's)")

    ld = sub.add_parser("load", help="import an OCI layout/archive or docker archive",
                        description="Import the images of an OCI layout (directory or tar) "
                        "or a docker archive (docker save, podman save, pybuild save), named "
                        "as the archive names them, or -t.")
    ld.add_argument("-i", "--input", default="",
                    help="layout directory or tarball (default: stdin)")
    ld.add_argument("-t", "--tag", action="append", default=[],
                    help="name(s) for the image (default: the names recorded in the archive)")
    ld.add_argument("-q", "--quiet", action="store_true", help="print only the names")

    ip = sub.add_parser("import", help="make an image of a root filesystem tarball",
                        description="Make a one-layer image of a root filesystem tarball "
                        "(plain, gzip, zstd, bzip2 or xz; - for stdin), as `docker import`: "
                        "e.g. what mmdebstrap or debootstrap made.")
    ip.add_argument("file", metavar="FILE|-")
    ip.add_argument("reference", nargs="?", default="", metavar="REPOSITORY[:TAG]")
    ip.add_argument("-t", "--tag", action="append", default=[], help="name(s) for the image")
    ip.add_argument("-c", "--change", action="append", default=[],
                    help="a Dockerfile instruction for the config: CMD, ENTRYPOINT, ENV, "
                         "EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, "
                         "WORKDIR")
    ip.add_argument("-m", "--message", default="", help="the history entry's comment")
    ip.add_argument("--platform", default="", help="the image's platform (default: this "
                    "host's)")

    d = sub.add_parser("debug", help="inspect pybuild's view of a Dockerfile")
    dsub = d.add_subparsers(dest="debug_command", metavar="WHAT")
    a = dsub.add_parser("ast", help="print the parsed Dockerfile in BuildKit's dump format")
    a.add_argument("dockerfile")
    dg = dsub.add_parser("dag", help="print the op DAG of a build as JSON or Graphviz dot")
    dg.add_argument("context")
    dg.add_argument("-f", "--file", default="")
    dg.add_argument("--build-arg", action="append")
    dg.add_argument("--target", default="")
    dg.add_argument("--platform", action="append", default=[])
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
    gc.add_argument("--max-used-space", default="",
                    help="drop least recently used records until the store uses at most SIZE")
    gc.add_argument("--reserved-space", default="",
                    help="never drop records below SIZE of store (alone: prune down to it)")
    gc.add_argument("--min-free-space", default="",
                    help="drop least recently used records until the file system has SIZE "
                         "free")
    gc.add_argument("--keep-storage", default="",
                    help="drop least recently used records until the store is under SIZE "
                         "(buildx's older name for --reserved-space)")
    gc.add_argument("-f", "--force", action="store_true",
                    help="accepted, as buildx: pybuild never asks for confirmation")
    sub.add_parser("du", help="show what the image store and build cache hold")
    if only in (None, "history"):
        from pybuild.cli import history_commands

        history_commands.add_parser(sub)

    sub.add_parser("version", help="show pybuild's version and environment")
    cp = sub.add_parser("completion", help="print a shell completion script",
                        description="Print a completion script generated from pybuild's "
                        "argument parser: `source <(pybuild completion bash)`, or for zsh "
                        "`pybuild completion zsh > ~/.zfunc/_pybuild`.")
    cp.add_argument("shell", choices=["bash", "zsh"])
    sub.add_parser("man", help="print pybuild's manual page (roff), generated from the "
                   "argument parser", description="Print the manual page: `pybuild man | "
                   "man -l -`.")
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
        return _main(_rewrite(argv))
    argv = _rewrite(sys.argv[1:])
    prestart = None
    if _wanted(argv) == "build" and not _is_call(argv):
        from pybuild.api import Prestart

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


def _is_call(argv: list[str]) -> bool:
    """A `build --call=...`/`--check` runs the frontend only: no sandbox to start early."""
    return any(a.startswith(("--call", "--check", "--print")) for a in argv)


def _main(argv: list[str], prestart: Prestart | None = None) -> int:
    from pybuild.errors import PybuildError

    parser = _parser(_wanted(argv))
    try:
        args = parser.parse_args(argv)
    except PybuildError as exc:  # a flag refused while parsing (see build_command)
        from pybuild.cli.render import render_error

        render_error(exc, sys.stderr)
        return exc.exit_code
    if not args.command:
        parser.print_help()
        return 0
    try:
        return _dispatch(args, parser, prestart)
    except BrokenPipeError as exc:
        if _stdout_is_broken():
            return 141  # as a coreutils command killed by SIGPIPE: silent
        return _internal_error(exc, args.debug)
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
        return _internal_error(exc, args.debug)
    except BaseException as exc:
        # asyncio is imported only by commands that run it (start-up time): a cancellation
        # (SIGTERM, see api._terminable) can only come from it.
        asyncio = sys.modules.get("asyncio")
        if asyncio is None or not isinstance(exc, asyncio.CancelledError):
            raise
        print("pybuild: terminated; running steps were stopped and nothing half-written "
              "was kept", file=sys.stderr)
        return 143


def _internal_error(exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(exc)
    else:
        print(f"pybuild: internal error: {type(exc).__name__}: {exc}\n"
              "run with --debug for the traceback", file=sys.stderr)
    return 2


def _stdout_is_broken() -> bool:
    """After a BrokenPipeError: was it stdout's reader that went away (`| head`)? (A
    pipe whose reader closed polls as an error.) Then stdout is pointed at /dev/null, so
    that nothing is printed about it at exit."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(ev & select.POLLERR for _, ev in poller.poll(0)):
            return False
    except (OSError, ValueError):
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return True


def _builder(args: argparse.Namespace, prestart: Prestart | None = None) -> Builder:
    from pybuild.api import Builder

    return Builder(args.root or None,
                   warmup=prestart.warmup() if prestart is not None else None)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser,
              prestart: Prestart | None = None) -> int:
    if args.command == "build":  # (the hot path: nothing else loads)
        from pybuild.cli.build_command import build

        return build(args, _builder(args, prestart))
    from pybuild.cli import commands

    if args.command in _IMAGE_COMMANDS:
        from pybuild.cli import image_commands

        run = getattr(image_commands, _IMAGE_COMMANDS[args.command])
        return int(run(_builder(args), args))
    match args.command:
        case "prune":
            return commands.prune(_builder(args), args)
        case "du":
            return commands.du(_builder(args))
        case "pull" | "push" | "login" | "logout" | "imagetools":
            from pybuild.cli import registry_commands

            return registry_commands.run(args, lambda: _builder(args), parser)
        case "history":
            from pybuild.cli import history_commands

            return history_commands.run(args, parser)
        case "version":
            return commands.version(args.root)
        case "completion":
            from pybuild.cli import manpage

            sys.stdout.write(manpage.completion(_parser(), args.shell))
            return 0
        case "man":
            from pybuild.cli import manpage

            sys.stdout.write(manpage.man_page(_parser()))
            return 0
        case "debug":
            if args.debug_command == "ast":
                return commands.debug_ast(args.dockerfile)
            if args.debug_command == "dag":
                return commands.debug_dag(args, _builder(args))
            parser.parse_args(["debug", "--help"])
    return 0


_IMAGE_COMMANDS = {"images": "images", "inspect": "inspect", "tag": "tag", "rmi": "rmi",
                   "image-history": "history", "export": "export", "load": "load",
                   "save": "save", "import": "import_"}

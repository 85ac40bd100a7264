"""The small commands: prune, du, debug, version. `build_command` runs builds (and holds
what the commands share: progress views, registry flags); `image_commands` the image
store's commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.api import Builder


def prune(builder: Builder, args: argparse.Namespace) -> int:
    """`prune`, with buildx's flags (-f is accepted: pybuild never asks)."""
    from pybuild.api import PrunePolicy
    from pybuild.units import human_size, parse_duration, parse_size

    until = None
    for f in args.filter:
        key, _, value = f.partition("=")
        if key not in ("until", "unused-for") or not value:
            raise UserError(f"unsupported filter {f!r}: only until=DURATION is supported",
                            code="bad-flag")
        if until is not None:
            raise UserError(f"--filter {f}: one until= filter only", code="bad-flag")
        until = parse_duration(value)

    def size(flag: str, text: str) -> int | None:
        if not text:
            return None
        try:
            return parse_size(text)
        except UserError as exc:
            raise UserError(f"{flag}: {exc.message}", code="bad-flag") from None

    report = builder.prune(PrunePolicy(
        everything=args.all, until=until,
        keep_storage=size("--keep-storage", args.keep_storage),
        max_used_space=size("--max-used-space", args.max_used_space),
        reserved_space=size("--reserved-space", args.reserved_space),
        min_free_space=size("--min-free-space", args.min_free_space)))
    print(f"removed {report.records_removed} cache records, {report.blobs_removed} blobs "
          f"and {report.dirs_removed} cache mounts or downloads; "
          f"{human_size(report.bytes_freed)} of blobs freed")
    return 0


def du(builder: Builder) -> int:
    from pybuild.units import human_size

    print(f"{'KIND':<6} {'ID':<12} {'SIZE':>9}  {'LAST USED':<20}  DESCRIPTION")
    for r in builder.disk_usage():
        print(f"{r.kind:<6} {r.id[-12:]:<12} {human_size(r.size):>9}  "
              f"{r.last_used:<20}  {r.description}")
    print(f"total in the content store: {human_size(builder.content_size())}")
    return 0


def debug_ast(path: str) -> int:
    from pybuild.api import dockerfile_ast, read_regular_file

    data = sys.stdin.buffer.read() if path == "-" else read_regular_file(path,
                                                                         what="Dockerfile")
    sys.stdout.write(dockerfile_ast(data, path))
    return 0


def debug_dag(args: argparse.Namespace, builder: Builder) -> int:
    from pybuild.cli import flags
    from pybuild.cli.build_command import parse_build_args
    from pybuild.request import BuildRequest

    req = BuildRequest(context=args.context, dockerfile=args.file,
                       build_args=parse_build_args(args.build_arg),
                       target=args.target, platforms=flags.parse_platforms(args.platform))
    definition = builder.definition(req)
    if args.format == "dot":
        sys.stdout.write(definition.to_dot())
    else:
        print(json.dumps(definition.to_json(), indent=2))
    return 0


def version(root: str | None = None) -> int:
    """`pybuild version`: the version, and what this machine gives it."""
    import platform
    import shutil

    from pybuild import __version__
    from pybuild.api import default_root
    from pybuild.oci.platform import host

    def found(names: tuple[str, ...]) -> str:
        have = [f"{n} ({shutil.which(n)})" for n in names if shutil.which(n)]
        return ", ".join(have) or "none found"

    print(f"pybuild {__version__}")
    print(f" Python:    {platform.python_version()} ({sys.executable})")
    print(f" Platform:  {host()}")
    print(f" Root:      {root or default_root()}")
    print(f" Runtimes:  {found(('crun', 'runc'))}")
    print(f" --load:    {found(('podman', 'docker'))}")
    return 0

"""The subcommands' bodies: command-line strings in, typed values to the `Builder`, its
answers printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.api import Builder, EventSink
    from pybuild.request import BuildRequest, Secret, SSHAgent


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


def _progress(mode: str, quiet: bool) -> Progress:
    from pybuild.cli.render import JsonProgress, PlainProgress, QuietProgress

    if quiet or mode == "quiet":
        return Progress(QuietProgress())
    if mode == "rawjson":
        return Progress(JsonProgress())
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        from pybuild.cli.tty import TtyProgress

        return Progress(TtyProgress())
    return Progress(PlainProgress())


def _stdout() -> Any:
    """Where a tarball output without dest goes: stdout, unless it is a terminal."""
    return None if sys.stdout.isatty() else sys.stdout.buffer


def registry_options(args: argparse.Namespace) -> Any:
    """The registry flags and environment as RegistryOptions (registry_commands owns it)."""
    from pybuild.cli.registry_commands import registry_options as options

    return options(args)


def parse_secret(text: str) -> Secret:
    """buildx's `--secret id=ID,src=FILE` / `id=ID,env=VAR` / `src=FILE` (id = basename)."""
    from pybuild.request import Secret

    fields = dict(f.partition("=")[::2] for f in text.split(","))
    sid = fields.get("id", "")
    kind_value = [(k, fields[k]) for k in ("src", "source", "env") if fields.get(k)]
    if not sid and kind_value and kind_value[0][0] != "env":
        sid = os.path.basename(kind_value[0][1])
    if not sid or len(kind_value) != 1:
        raise UserError(f"invalid --secret {text!r}: use id=ID,src=FILE or id=ID,env=VAR")
    kind, value = kind_value[0]
    return Secret.from_env(sid, value) if kind == "env" else Secret.from_file(sid, value)


def parse_ssh(text: str) -> SSHAgent:
    from pybuild.request import SSHAgent

    sid, _, path = text.partition("=")
    if not sid:
        raise UserError(f"invalid --ssh {text!r}: use default or ID=SOCKET")
    return SSHAgent(id=sid, socket=path)


def parse_named_context(text: str) -> tuple[str, Any]:
    from pybuild.api import parse_named_context

    name, eq, value = text.partition("=")
    if not eq or not name or not value:
        raise UserError(f"invalid --build-context {text!r}: use NAME=VALUE")
    return name, parse_named_context(value)


def parse_platforms(text: str) -> tuple[Any, ...]:
    from pybuild.oci.platform import Platform

    if not text:
        return ()
    return tuple(dict.fromkeys(Platform.parse(p) for p in text.split(",")))


def build_request(args: argparse.Namespace, build_args: tuple[tuple[str, str], ...],
                  labels: tuple[tuple[str, str], ...]) -> BuildRequest:
    from pybuild.api import parse_output
    from pybuild.request import BuildRequest

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

        cache_from = tuple(parse_cache_option(x, flag="--cache-from") for x in args.cache_from)
        cache_to = tuple(parse_cache_option(x, flag="--cache-to") for x in args.cache_to)
    return BuildRequest(
        context=args.context, dockerfile=args.file, tags=tuple(args.tag),
        build_args=build_args, target=args.target, platforms=parse_platforms(args.platform),
        labels=labels, no_cache=args.no_cache, no_cache_filter=tuple(args.no_cache_filter),
        network=args.network, runtime=args.runtime, compression=args.compression,
        max_parallelism=args.max_parallelism,
        source_date_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        outputs=tuple(outputs),
        secrets=tuple(parse_secret(x) for x in args.secret),
        ssh=tuple(parse_ssh(x) for x in args.ssh),
        named_contexts=tuple(parse_named_context(x) for x in args.build_context),
        registry=registry_options(args), pull=args.pull != "never",
        cache_from=cache_from, cache_to=cache_to,
        iidfile=args.iidfile, metadata_file=args.metadata_file,
        metadata_warnings=os.environ.get("BUILDX_METADATA_WARNINGS", "").lower() in ("1",
                                                                                   "true"),
    )


def build(args: argparse.Namespace, builder: Builder, build_args: tuple[tuple[str, str], ...],
          labels: tuple[tuple[str, str], ...]) -> int:
    req = build_request(args, build_args, labels)
    progress = _progress(args.progress, args.quiet)
    try:
        result = builder.build(req, on_event=progress, stdout=_stdout(), handle_sigterm=True)
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
    digest = result.pushed[0].digest if result.pushed else result.image.digest
    if args.quiet:
        print(digest)
    else:
        names = ", ".join(result.tags) if result.tags else "(untagged)"
        print(f"built {names} {digest}", file=sys.stderr)
    return 0


def images(builder: Builder) -> int:
    from pybuild.units import human_size

    rows = [("NAME", "DIGEST", "PLATFORMS", "SIZE", "CREATED")]
    for img in builder.images():
        if img.broken:
            platforms, size = f"(broken: {img.broken[:40]})", "-"
        else:
            platforms, size = ",".join(str(p) for p in img.platforms), human_size(img.size)
        rows.append((img.name, img.digest.partition(":")[2][:12], platforms, size,
                     img.created))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def inspect(builder: Builder, image: str, platform: str) -> int:
    details = builder.inspect(image, _platform(platform))
    out = {
        "name": details.name,
        "descriptor": details.descriptor.to_json(),
        "manifest_digest": str(details.manifest_descriptor.digest),
        "manifest": details.manifest.to_json(),
        "config": details.config.to_json(),
    }
    print(json.dumps(out, indent=2))
    return 0


def _platform(text: str) -> Any:
    from pybuild.oci.platform import Platform

    return Platform.parse(text) if text else None


def tag(builder: Builder, source: str, target: str) -> int:
    builder.tag(source, target)
    return 0


def rmi(builder: Builder, names: list[str]) -> int:
    for name in names:
        print(f"Untagged: {name} ({builder.untag(name).digest})")
    return 0


def load(builder: Builder, path: str, tags: list[str]) -> int:
    report = builder.load(path, tuple(tags))
    for name in report.names:
        print(f"Loaded image: {name} ({report.descriptor.digest})")
    return 0


def export(builder: Builder, image: str, outputs: list[str], platform: str) -> int:
    from pybuild.api import parse_output

    specs = [parse_output(x) for x in outputs]
    for spec in specs:
        report = builder.export(image, spec, platform=_platform(platform), stdout=_stdout(),
                                warn=lambda text: print(f"WARNING: {text}", file=sys.stderr))
        print(f"exported {report.descriptor.digest} to {report.describe()}", file=sys.stderr)
    return 0


def prune(builder: Builder, everything: bool, filters: list[str], keep_storage: str) -> int:
    from pybuild.gc import PrunePolicy
    from pybuild.units import human_size, parse_duration, parse_size

    until = None
    for f in filters:
        key, _, value = f.partition("=")
        if key != "until" or not value:
            raise UserError(f"unsupported filter {f!r}: only until=DURATION is supported")
        until = parse_duration(value)
    report = builder.prune(PrunePolicy(
        everything=everything, until=until,
        keep_storage=parse_size(keep_storage) if keep_storage else None))
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
    from pybuild.api import dockerfile_ast

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    sys.stdout.write(dockerfile_ast(data, path))
    return 0


def debug_dag(args: argparse.Namespace, builder: Builder,
              build_args: tuple[tuple[str, str], ...]) -> int:
    from pybuild.request import BuildRequest

    req = BuildRequest(context=args.context, dockerfile=args.file, build_args=build_args,
                       target=args.target, platforms=parse_platforms(args.platform))
    definition = builder.definition(req)
    if args.format == "dot":
        sys.stdout.write(definition.to_dot())
    else:
        print(json.dumps(definition.to_json(), indent=2))
    return 0

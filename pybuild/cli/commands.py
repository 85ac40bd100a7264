"""The subcommands' bodies."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.cli.main import Prestart


def _progress(mode: str, quiet: bool) -> Any:
    from pybuild.cli.render import JsonProgress, PlainProgress, QuietProgress

    if quiet or mode == "quiet":
        return QuietProgress()
    if mode == "rawjson":
        return JsonProgress()
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        from pybuild.cli.tty import TtyProgress

        return TtyProgress()
    return PlainProgress()


def registry_options(args: argparse.Namespace) -> Any:
    """--creds/--authfile/--insecure/--ca-cert as RegistryOptions (None if none given)."""
    from pathlib import Path

    if not (args.creds or args.authfile or args.insecure or args.ca_cert):
        return None
    from pybuild.registry import RegistryOptions

    if args.creds and ":" not in args.creds:
        raise UserError("--creds must be USER:PASSWORD")
    return RegistryOptions(
        creds=args.creds or None,
        auth_files=(Path(args.authfile),) if args.authfile else None,
        insecure=args.insecure, ca_cert=Path(args.ca_cert) if args.ca_cert else None,
    )


def _parse_secret(text: str) -> tuple[str, str, str]:
    fields = dict(f.partition("=")[::2] for f in text.split(","))
    sid = fields.get("id", "")
    kind_value = [(k, fields[k]) for k in ("src", "source", "env") if fields.get(k)]
    if not sid and kind_value and kind_value[0][0] != "env":
        import os

        sid = os.path.basename(kind_value[0][1])
    if not sid or len(kind_value) != 1:
        raise UserError(f"invalid --secret {text!r}: use id=ID,src=FILE or id=ID,env=VAR")
    kind, value = kind_value[0]
    return sid, "env" if kind == "env" else "file", value


def _parse_ssh(text: str) -> tuple[str, str]:
    sid, _, path = text.partition("=")
    if not sid:
        raise UserError(f"invalid --ssh {text!r}: use default or ID=SOCKET")
    return sid, path


def _parse_named(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name or not value:
        raise UserError(f"invalid --build-context {text!r}: use NAME=VALUE")
    return name, value


def pull(stores: Any, args: argparse.Namespace) -> int:
    from pybuild.api import pull_image
    from pybuild.oci.platform import Platform, host

    platforms = None if args.all_platforms else [
        Platform.parse(args.platform) if args.platform else host()]
    desc, name = pull_image(stores, args.image, platforms, registry_options(args))
    print(f"pulled {name} {desc.digest}")
    return 0


def push(stores: Any, args: argparse.Namespace) -> int:
    from pybuild.api import push_image
    from pybuild.oci.reference import Reference

    rec = stores.images.get(args.image)
    dest = Reference.parse(args.destination or args.image)
    print(f"pushed {push_image(stores, rec.descriptor, dest, registry_options(args))}")
    return 0


def build(args: argparse.Namespace, stores: Any, build_args: tuple[tuple[str, str], ...],
          labels: tuple[tuple[str, str], ...], prestart: Prestart | None = None) -> int:
    """`prestart`: the sandbox daemon `main` may have started first thing."""
    import os

    from pybuild.api import BuildRequest
    from pybuild.api import build as run_build

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    for key, value in build_args:
        if key == "SOURCE_DATE_EPOCH":
            epoch = value
    req = BuildRequest(
        context=args.context, dockerfile=args.file, tags=tuple(args.tag),
        build_args=build_args, target=args.target, platform=args.platform, labels=labels,
        no_cache=args.no_cache, no_cache_filter=tuple(args.no_cache_filter),
        network=args.network, runtime=args.runtime, compression=args.compression,
        max_parallelism=args.max_parallelism,
        source_date_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        outputs=tuple(args.output),
        secrets=tuple(_parse_secret(x) for x in args.secret),
        ssh=tuple(_parse_ssh(x) for x in args.ssh),
        named_contexts=tuple(_parse_named(x) for x in args.build_context),
        registry=registry_options(args), pull=args.pull != "never",
        cache_from=tuple(args.cache_from), cache_to=tuple(args.cache_to),
    )
    progress = _progress(args.progress, args.quiet)
    try:
        result = run_build(req, stores, progress,
                           daemon=prestart.daemon if prestart is not None else None)
    finally:
        if hasattr(progress, "close"):
            progress.close()
    if prestart is not None:
        prestart.record(bool(result.executed))
    outputs = list(args.output)
    if args.push:  # buildx: --push is -o type=image,push=true for the -t names
        if not args.tag:
            raise UserError("--push needs at least one -t NAME to push to")
        outputs += [f"type=image,push=true,name={tag}" for tag in args.tag]
    for spec in outputs:
        _export_descriptor(stores, result.manifest, spec, default_name=(args.tag or [""])[0],
                           registry=registry_options(args), compression=args.compression)
    if args.iidfile:
        with open(args.iidfile, "w") as f:
            f.write(result.manifest.digest)
    if args.metadata_file:
        meta = {
            "containerimage.digest": str(result.manifest.digest),
            "containerimage.config.digest": str(result.config_digest),
            "containerimage.descriptor": result.manifest.to_json(),
            "image.name": ",".join(result.tags),
            "pybuild.steps.executed": result.executed,
            "pybuild.steps.not_cached_because": result.misses,
        }
        with open(args.metadata_file, "w") as f:
            json.dump(meta, f, indent=2)
    if args.explain:
        if not result.misses:
            print("explain: every step was cached", file=sys.stderr)
        for name, reason in result.misses.items():
            print(f"explain: {name}: {reason}", file=sys.stderr)
    if args.quiet:
        print(result.manifest.digest)
    else:
        names = ", ".join(result.tags) if result.tags else "(untagged)"
        print(f"built {names} {result.manifest.digest}", file=sys.stderr)
    return 0


def images(stores: Any) -> int:
    from pybuild.content.walk import platforms_of

    rows = [("NAME", "DIGEST", "PLATFORMS", "SIZE", "CREATED")]
    for rec in stores.images.list():
        from pybuild.oci.reference import Reference

        try:
            plats = platforms_of(stores.content, rec.descriptor)
            platforms = ",".join(str(p) for _, p in plats)
            size = _human(_image_size(stores, rec.descriptor))
        except UserError as exc:
            platforms, size = f"(broken: {exc.message[:40]})", "-"
        rows.append((Reference.parse(rec.name).familiar, rec.descriptor.digest.hex[:12],
                     platforms, size, rec.created))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _image_size(stores: Any, desc: Any) -> int:
    from pybuild.content.walk import reachable

    return sum(stores.content.size(d) for d in reachable(stores.content, [desc])
               if stores.content.has(d))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def _resolve(stores: Any, image: str, platform: str) -> Any:
    from pybuild.content.walk import resolve_platform
    from pybuild.oci import mediatypes as mt
    from pybuild.oci.platform import Platform

    rec = stores.images.get(image)
    desc = rec.descriptor
    if platform or desc.media_type in mt.INDEX_TYPES:
        from pybuild.oci.platform import host

        desc = resolve_platform(stores.content, desc,
                                Platform.parse(platform) if platform else host(), name=image)
    return rec, desc


def inspect(stores: Any, image: str, platform: str) -> int:
    from pybuild.content.walk import read_config, read_manifest

    rec, desc = _resolve(stores, image, platform)
    manifest = read_manifest(stores.content, desc)
    config = read_config(stores.content, manifest)
    out = {
        "name": rec.name,
        "descriptor": rec.descriptor.to_json(),
        "manifest_digest": str(desc.digest),
        "manifest": manifest.to_json(),
        "config": config.to_json(),
    }
    print(json.dumps(out, indent=2))
    return 0


def tag(stores: Any, source: str, target: str) -> int:
    from pybuild.oci.reference import Reference

    rec = stores.images.get(source)
    stores.images.put(Reference.parse(target), rec.descriptor, rec.created)
    return 0


def rmi(stores: Any, names: list[str]) -> int:
    for name in names:
        rec = stores.images.remove(name)
        print(f"Untagged: {name} ({rec.descriptor.digest})")
    return 0


def _export_descriptor(stores: Any, desc: Any, spec: str, default_name: str = "",
                       registry: Any = None, compression: str = "gzip") -> None:
    from pybuild.api import export_image

    what = export_image(stores, desc, spec, default_name, registry=registry,
                        compression=compression,
                        warn=lambda text: print(f"WARNING: {text}", file=sys.stderr))
    print(f"exported {desc.digest} to {what}", file=sys.stderr)


def load(stores: Any, path: str, tags: list[str]) -> int:
    from pybuild.api import load_image

    desc, names = load_image(stores, path, tuple(tags))
    for name in names:
        print(f"Loaded image: {name} ({desc.digest})")
    return 0


def export(stores: Any, image: str, outputs: list[str], platform: str) -> int:
    from pybuild.oci.reference import Reference

    rec = stores.images.get(image)
    desc = rec.descriptor
    if platform:
        _, desc = _resolve(stores, image, platform)
    for spec in outputs:
        _export_descriptor(stores, desc, spec, default_name=Reference.parse(image).familiar)
    return 0


def prune(stores: Any, everything: bool, filters: list[str], keep_storage: str) -> int:
    from pybuild.api import parse_duration, parse_size
    from pybuild.api import prune as run_prune

    until = None
    for f in filters:
        key, _, value = f.partition("=")
        if key != "until" or not value:
            raise UserError(f"unsupported filter {f!r}: only until=DURATION is supported")
        until = parse_duration(value)
    report = run_prune(stores, everything=everything, until=until,
                       keep_storage=parse_size(keep_storage) if keep_storage else None)
    print(f"removed {report.records_removed} cache records, {report.blobs_removed} blobs "
          f"and {report.dirs_removed} cache mounts or downloads; {_human(report.bytes_freed)}"
          " of blobs freed")
    return 0


def du(stores: Any) -> int:
    from pybuild.content.gc import disk_usage

    rows = disk_usage(stores)
    print(f"{'KIND':<6} {'ID':<12} {'SIZE':>9}  {'LAST USED':<20}  DESCRIPTION")
    for r in rows:
        print(f"{r['kind']:<6} {r['id'][-12:]:<12} {_human(r['size']):>9}  "
              f"{r['last_used']:<20}  {r['description']}")
    total = sum(stores.content.size(d) for d in stores.content.digests())
    print(f"total in the content store: {_human(total)}")
    return 0


def debug_ast(path: str) -> int:
    from pybuild.frontend.dockerfile.dump import dump_ast
    from pybuild.frontend.dockerfile.parser import parse

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    sys.stdout.write(dump_ast(parse(data, path)))
    return 0


def debug_dag(args: argparse.Namespace, stores: Any,
              build_args: tuple[tuple[str, str], ...]) -> int:
    import os

    from pybuild.api import BuildRequest, LocalResolver, _read_dockerfile, _read_ignore
    from pybuild.frontend.convert import FrontendOptions, compile_dockerfile
    from pybuild.oci.platform import Platform

    req = BuildRequest(context=args.context, dockerfile=args.file)
    data, path = _read_dockerfile(req)
    patterns, _ = _read_ignore(args.context, path)
    fe = compile_dockerfile(FrontendOptions(
        dockerfile=data, filename=os.path.relpath(path), build_args=build_args,
        target=args.target, platform=Platform.parse(args.platform) if args.platform else None,
        dockerignore=tuple(patterns)), LocalResolver(stores))
    if args.format == "dot":
        sys.stdout.write(fe.definition.to_dot())
    else:
        print(json.dumps(fe.definition.to_json(), indent=2))
    return 0

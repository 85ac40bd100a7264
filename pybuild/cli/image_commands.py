"""The image store's commands as docker users type them: images, inspect, tag, rmi,
history, save, load, import, export, pull, push. Output follows docker's (columns, `-q`,
`--format` templates, `--no-trunc`); with -q only IDs or names reach stdout, and errors
always go to stderr."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from pybuild.errors import NotFoundError, PybuildError, UserError

if TYPE_CHECKING:
    from pybuild.api import Builder, ImageSummary

IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG",
                 "Digest": "DIGEST", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                 "Size": "SIZE", "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE",
                 "UniqueSize": "UNIQUE SIZE", "VirtualSize": "SIZE",
                 "Platforms": "PLATFORMS"}
HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                   "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}


def _short(digest: str, no_trunc: bool) -> str:
    return digest if no_trunc else digest.partition(":")[2][:12]


def _go_time(when: float | None) -> str:
    """Go's `time.Time.String()` in local time, as docker's CreatedAt."""
    if when is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(when))


def _since(when: float | None) -> str:
    from pybuild.units import human_duration

    if when is None or when <= 0:
        return "N/A"
    return human_duration(max(0.0, time.time() - when)) + " ago"


def _template(fmt: str, headers: dict[str, str]) -> Any:
    from pybuild.cli.template import Template

    return Template("{{json .}}" if fmt == "json" else fmt, headers)


def _emit(fmt: str, headers: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """Rows through a `--format` (docker's `table`, `json`, or a template)."""
    from pybuild.cli.template import align

    tmpl = _template(fmt, headers)
    lines = [tmpl.render(row) for row in rows]
    if tmpl.table:
        lines = align([tmpl.header(), *lines])
    for line in lines:
        print(line)


# -- images -----------------------------------------------------------------------------------


def _image_row(img: ImageSummary, no_trunc: bool, digests: bool) -> dict[str, Any]:
    from pybuild.api import parse_created
    from pybuild.units import docker_size

    created = parse_created(img.created)
    return {
        "Containers": "N/A",
        "CreatedAt": _go_time(created),
        "CreatedSince": _since(created),
        "Digest": img.digest,
        "ID": _short(img.id, no_trunc) if img.id else "<broken>",
        "Repository": img.repository,
        "SharedSize": "N/A",
        "Size": docker_size(img.size) if not img.broken else "N/A",
        "Tag": img.tag,
        "UniqueSize": "N/A",
        "VirtualSize": docker_size(img.size) if not img.broken else "N/A",
        "Platforms": (",".join(str(p) for p in img.platforms) if not img.broken
                      else f"(broken: {img.broken[:40]})"),
    }


def _matches(img: ImageSummary, pattern: str) -> bool:
    """`docker images REPOSITORY[:TAG]` and `--filter reference=`: glob on the familiar
    repository (and tag)."""
    repo, _, tag = pattern.rpartition(":") if ":" in pattern.rsplit("/", 1)[-1] else (
        pattern, "", "")
    if not repo:
        repo, tag = pattern, ""
    if not (fnmatch.fnmatchcase(img.repository, repo)
            or fnmatch.fnmatchcase(img.name, pattern)):
        return False
    return not tag or fnmatch.fnmatchcase(img.tag, tag)


def images(builder: Builder, args: argparse.Namespace) -> int:
    from pybuild.api import parse_created

    listed = builder.images()
    filters = list(args.filter)
    if args.repository:
        filters.append(f"reference={args.repository}")
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq:
            raise UserError(f"invalid --filter {f!r}: expected KEY=VALUE", code="bad-flag")
        if key == "reference":
            listed = [i for i in listed if _matches(i, value)]
        elif key == "dangling":
            if value not in ("true", "false"):
                raise UserError(f"invalid --filter {f!r}: dangling is true or false",
                                code="bad-flag")
            if value == "true":  # pybuild lists named images only: none dangles
                listed = []
        elif key == "label":
            lkey, _, lvalue = value.partition("=")
            listed = [i for i in listed if _has_label(builder, i, lkey, lvalue)]
        else:
            raise UserError(f"--filter {key}= is not supported", code="bad-flag",
                            hint="images filters: reference=, label=, dangling=")
    listed.sort(key=lambda i: (-(parse_created(i.created) or 0.0), i.name))
    if args.quiet:
        for img in listed:
            print(_short(img.id, args.no_trunc) if img.id else "<broken>")
        return 0
    rows = [_image_row(i, args.no_trunc, args.digests) for i in listed]
    fmt = args.format
    if not fmt or fmt == "table":
        fmt = ("table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if args.digests else "")
               + "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.Platforms}}")
    _emit(fmt, IMAGE_HEADERS, rows)
    return 0


def _has_label(builder: Builder, img: ImageSummary, key: str, value: str) -> bool:
    if img.broken:
        return False
    labels = dict(builder.inspect(img.name).config.config.labels)
    return key in labels and (not value or labels[key] == value)


# -- inspect, history -------------------------------------------------------------------------


def _platform(text: str) -> Any:
    from pybuild.oci.platform import Platform

    return Platform.parse(text) if text else None


def inspect(builder: Builder, args: argparse.Namespace) -> int:
    found, failed = [], []
    for image in args.images:
        try:
            found.append(builder.inspect(image, _platform(args.platform)).to_json())
        except NotFoundError as exc:
            failed.append(exc)
    fmt = args.format
    if not fmt:
        if len(args.images) == 1 and found:
            print(json.dumps(found[0], indent=2))
        elif found or not failed:
            print(json.dumps(found, indent=2))
    elif fmt == "json":
        print(json.dumps(found, separators=(",", ":")))
    else:
        tmpl = _template(fmt, {})
        for item in found:
            print(tmpl.render(item))
    if failed:
        if len(failed) == 1:
            raise failed[0]
        raise NotFoundError("; ".join(e.message for e in failed))
    return 0


def history(builder: Builder, args: argparse.Namespace) -> int:
    from pybuild.api import parse_created
    from pybuild.units import docker_size

    rows = builder.history(args.image, _platform(args.platform))
    human = args.human
    if args.quiet:
        for row in rows:
            print(row.id if args.no_trunc or row.id == "<missing>" else _short(row.id, False))
        return 0
    out = []
    for row in rows:
        when = parse_created(row.created)
        created_at = (time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when))
                      if when is not None else "")
        if created_at and created_at[-5] in "+-":  # Go's RFC 3339: +01:00, Z for UTC
            created_at = created_at[:-2] + ":" + created_at[-2:]
        by = row.created_by.replace("\t", " ")
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        out.append({
            "ID": row.id if args.no_trunc or row.id == "<missing>" else _short(row.id, False),
            "CreatedAt": created_at,
            "CreatedSince": (("N/A" if when is None or when <= 946684800 else _since(when))
                             if human else created_at),
            "CreatedBy": by,
            "Size": docker_size(row.size) if human else str(row.size),
            "Comment": row.comment,
        })
    fmt = args.format
    if not fmt or fmt == "table":
        fmt = ("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
               if human else
               "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}")
    _emit(fmt, HISTORY_HEADERS, out)
    return 0


# -- naming -----------------------------------------------------------------------------------


def tag(builder: Builder, args: argparse.Namespace) -> int:
    builder.tag(args.source, args.target)
    return 0


def rmi(builder: Builder, args: argparse.Namespace) -> int:
    """docker's `rmi`: every image is tried; with -f, images that are not there are only
    reported (on stderr) and the exit status is 0."""
    errors: list[PybuildError] = []
    fatal = False
    for image in args.images:
        try:
            removed = builder.remove(image, force=args.force)
        except PybuildError as failure:
            fatal = fatal or not isinstance(failure, NotFoundError)
            errors.append(failure)
            continue
        for name in removed.untagged:
            print(f"Untagged: {name}")
    if errors:
        if args.force and not fatal:
            for err in errors:
                print(f"Error: {err.message}", file=sys.stderr)
            return 0
        if len(errors) == 1:
            raise errors[0]
        for err in errors[:-1]:
            print(f"error: {err.message}", file=sys.stderr)
        raise errors[-1]
    return 0


# -- archives ---------------------------------------------------------------------------------


def load(builder: Builder, args: argparse.Namespace) -> int:
    """`load -i FILE` or `load < FILE` (stdin, as docker)."""
    if args.input and args.input != "-":
        report = builder.load(args.input, tuple(args.tag))
    else:
        if sys.stdin.isatty():
            raise UserError("load: no input: give -i FILE, or pipe an archive to stdin",
                            code="bad-flag")
        report = builder.load(sys.stdin.buffer, tuple(args.tag))
    for desc, names in report.images or ((report.descriptor, report.names),):
        for name in names:
            print(f"Loaded image: {name}" + ("" if args.quiet else f" ({desc.digest})"))
    return 0


def save(builder: Builder, args: argparse.Namespace) -> int:
    from pybuild.cli.build_command import stdout_for_outputs

    dest: Any = args.output
    if not dest or dest == "-":
        dest = stdout_for_outputs()
        if dest is None:
            raise UserError("cowardly refusing to save to a terminal: use -o FILE, or "
                            "redirect stdout", code="bad-flag")
    saved = builder.save(list(args.images), dest, platform=_platform(args.platform))
    if args.output and args.output != "-":
        for desc, names in saved:
            print(f"saved {', '.join(names) or '(no name)'} {desc.digest} to {args.output}",
                  file=sys.stderr)
    return 0


def import_(builder: Builder, args: argparse.Namespace) -> int:
    source = args.file
    if source.startswith(("http://", "https://")):
        raise UserError(f"import {source}: importing from a URL is not supported yet",
                        code="unsupported-flag", hint="download it, then import the file")
    names = [*args.tag, *([args.reference] if args.reference else [])]
    stream: Any = source
    if source == "-":
        if sys.stdin.isatty():
            raise UserError("import -: stdin is a terminal; pipe a tarball to it",
                            code="bad-flag")
        stream = sys.stdin.buffer
    desc = builder.import_rootfs(stream, tuple(names), changes=tuple(args.change),
                                 message=args.message, platform=_platform(args.platform))
    from pybuild.api import image_id

    print(image_id(builder.root, desc))
    return 0


def export(builder: Builder, args: argparse.Namespace) -> int:
    from pybuild.api import parse_output
    from pybuild.cli.build_command import stdout_for_outputs

    specs = [parse_output(x) for x in args.output]
    for spec in specs:
        report = builder.export(args.image, spec, platform=_platform(args.platform),
                                stdout=stdout_for_outputs(),
                                warn=lambda text: print(f"WARNING: {text}", file=sys.stderr))
        print(f"exported {report.descriptor.digest} to {report.describe()}", file=sys.stderr)
    return 0


# -- registries -------------------------------------------------------------------------------

"""One `--output` of a stored image: the match over the typed `OutputSpec`.

Image outputs (`type=image|registry`) name and push images; that is the build's job
with the image store and the registry (`job`), not an exporter's. Every image-writing
output converts the image first as its options say (`convert`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pybuild.content.store import ContentStore
from pybuild.errors import UserError
from pybuild.exporters.base import (
    CacheOnlyOutput,
    DockerOutput,
    ImageOutput,
    LocalOutput,
    OCIOutput,
    OutputSpec,
    TarOutput,
)
from pybuild.exporters.convert import conversion, convert_image
from pybuild.exporters.docker_archive import DockerArchiveExporter
from pybuild.exporters.facts import NO_FACTS, BuildFacts
from pybuild.exporters.local import LocalExporter, TarExporter
from pybuild.exporters.oci_layout import OCILayoutExporter
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference
from pybuild.transports.docker_archive import single_manifest


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportReport:
    kind: str  # "oci", "oci-layout", "docker", "local", "tar", "cacheonly"
    destination: str  # a path, "-" for stdout, "" for nothing
    descriptor: Descriptor  # what was written (compressed layers: another digest)

    def describe(self) -> str:
        where = "stdout" if self.destination == "-" else self.destination
        what = {"oci": "OCI archive", "oci-layout": "OCI layout", "docker": "docker archive",
                "local": "directory", "tar": "filesystem tarball"}.get(self.kind)
        return f"{what} {where}" if what else "nothing (cache only)"


def export(store: ContentStore, image: Descriptor, spec: OutputSpec, *,
           names: tuple[str, ...] = (), platform: Platform | None = None,
           stdout: BinaryIO | None = None, compression: str = "gzip",
           compression_memo: Path | None = None, facts: BuildFacts = NO_FACTS,
           warn: Callable[[str], None] | None = None) -> ExportReport:
    """Write `image` (in `store`) where `spec` says. `names`: the image's names when the
    output gives none (-t); `stdout`: where `dest=-` (or no dest) writes, None to refuse;
    `compression`: of layers, unless the output says; `facts`: what `rewrite-timestamp`
    needs of the build; `warn`: what an exporter left out (e.g. the device nodes
    type=local does not write)."""

    def dest_of(dest: str | None) -> str | BinaryIO:
        if dest is None or dest == "-":
            if stdout is None:
                raise UserError(f"type={_kind(spec)} output without dest: refusing to write a "
                                "tarball to a terminal", hint="add dest=FILE")
            return stdout
        return dest

    default = _compression(compression)
    match spec:
        case OCIOutput():
            conv = conversion(spec.image, output="type=oci", default_oci=True,
                              default_compression=default)
            packed = convert_image(store, image, conv, facts=facts,
                                   memo_path=compression_memo, output="type=oci")
            # BuildKit's oci exporter (normalizedNames): full names, `latest` if untagged
            ref_names = [str(Reference.parse(n)) for n in spec.image.names or names]
            written = OCILayoutExporter(dest_of(spec.dest), tar=spec.tar,
                                        names=ref_names).export(store, packed)
            return ExportReport(kind="oci" if spec.tar else "oci-layout",
                                destination=spec.dest or "-", descriptor=written)
        case DockerOutput():
            # buildx documents oci-mediatypes=false as the docker exporter's default (podman
            # reads such an archive through its Docker config, HEALTHCHECK and all).
            conv = conversion(spec.image, output="type=docker", default_oci=False,
                              default_compression=default)
            single = single_manifest(store, image, platform)  # before converting: one platform
            packed = convert_image(store, single, conv, facts=facts,
                                   memo_path=compression_memo, output="type=docker")
            written = DockerArchiveExporter(dest_of(spec.dest),
                                            repo_tags=spec.image.names or names).export(
                store, packed)
            return ExportReport(kind="docker", destination=spec.dest or "-", descriptor=written)
        case LocalOutput():
            LocalExporter(spec.dest, platform=platform, platform_split=spec.platform_split,
                          privileged_files=spec.privileged_files,
                          warn=warn).export(store, image)
            return ExportReport(kind="local", destination=spec.dest, descriptor=image)
        case TarOutput():
            TarExporter(dest_of(spec.dest), platform=platform,
                        platform_split=spec.platform_split).export(store, image)
            return ExportReport(kind="tar", destination=spec.dest or "-", descriptor=image)
        case CacheOnlyOutput():
            return ExportReport(kind="cacheonly", destination="", descriptor=image)
        case ImageOutput():
            # A build names and pushes its result (job); a stored image already has names.
            raise UserError("type=image and type=registry are outputs of a build",
                            code="bad-output",
                            hint="name a stored image with `pybuild tag`, push it with "
                                 "`pybuild push`")


def _compression(kind: str) -> mt.Compression:
    for known in mt.COMPRESSIONS:
        if kind == known:
            return known
    raise UserError(f"unknown compression {kind!r}: use gzip, zstd or uncompressed")


def _kind(spec: OutputSpec) -> str:
    return {OCIOutput: "oci", DockerOutput: "docker", TarOutput: "tar"}.get(type(spec), "?")

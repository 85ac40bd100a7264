"""One `--output` of a stored image: the match over the typed `OutputSpec`.

Image outputs (`type=image|registry`) name and push images; that is the builder's job
with the image store and the registry, not an exporter's, so they are not handled here.
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
from pybuild.exporters.docker_archive import DockerArchiveExporter
from pybuild.exporters.local import LocalExporter, TarExporter
from pybuild.exporters.oci_layout import OCILayoutExporter
from pybuild.layers.recompress import compress_image
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference


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
           compression_memo: Path | None = None,
           warn: Callable[[str], None] | None = None) -> ExportReport:
    """Write `image` (in `store`) where `spec` says. `names`: the image's names when the
    output gives none (-t); `stdout`: where `dest=-` (or no dest) writes, None to refuse;
    `compression`: of layers, unless the output says; `warn`: what an exporter left out
    (e.g. the device nodes type=local does not write)."""

    def dest_of(dest: str | None) -> str | BinaryIO:
        if dest is None or dest == "-":
            if stdout is None:
                raise UserError(f"type={_kind(spec)} output without dest: refusing to write a "
                                "tarball to a terminal", hint="add dest=FILE")
            return stdout
        return dest

    def compressed(kind: str | None) -> Descriptor:
        return compress_image(store, image, kind or compression, compression_memo)

    match spec:
        case OCIOutput():
            packed = compressed(spec.image.compression)
            ref_names = spec.image.names or names
            OCILayoutExporter(dest_of(spec.dest), tar=spec.tar,
                              ref_name=ref_names[0] if ref_names else None).export(store, packed)
            return ExportReport(kind="oci" if spec.tar else "oci-layout",
                                destination=spec.dest or "-", descriptor=packed)
        case DockerOutput():
            packed = compressed(spec.image.compression)
            tags = [Reference.parse(n).familiar for n in spec.image.names or names]
            DockerArchiveExporter(dest_of(spec.dest), repo_tags=tags,
                                  platform=platform).export(store, packed)
            return ExportReport(kind="docker", destination=spec.dest or "-", descriptor=packed)
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
            raise TypeError("image outputs are handled by the builder, not an exporter")


def _kind(spec: OutputSpec) -> str:
    return {OCIOutput: "oci", DockerOutput: "docker", TarOutput: "tar"}.get(type(spec), "?")

"""One build's outputs: what they ask is checked before the build, and after it the
result is named, exported and pushed, each output converting it as its options say
(`exporters.convert`). The build's `--annotation`s go into the stored result and into
every image output, as buildx adds them to every output.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from pybuild.builder.events import EventSink, Notice
from pybuild.errors import UserError
from pybuild.request import BuildRequest, BuildResult, PushReport

if TYPE_CHECKING:
    from pybuild.digest import Digest
    from pybuild.exporters.base import ImageOutput
    from pybuild.exporters.facts import BuildFacts
    from pybuild.exporters.run import ExportReport
    from pybuild.frontend import memo
    from pybuild.llb.definition import Definition
    from pybuild.oci.config import ImageConfig
    from pybuild.oci.descriptor import Descriptor
    from pybuild.root import Root


def tag(root: Root, name: str, image: Descriptor, created: str) -> str:
    """Name the result; an unchanged name is left alone (no rewrite, no fsync), which also
    keeps the frontend's memo of a no-op rebuild valid."""
    from pybuild.local_images import check_pin
    from pybuild.oci.reference import Reference

    ref = Reference.parse(name)
    check_pin(ref, image)
    record = root.images.find(ref)
    if (record is None or record.created != created
            or record.descriptor.to_json() != image.to_json()):
        root.images.put(ref, image, created)
    return ref.familiar


def check_outputs(req: BuildRequest) -> None:
    """What the outputs ask that cannot work, refused before anything is built: their
    conversions (`compression-level` out of range, ...) and `rewrite-timestamp` without
    SOURCE_DATE_EPOCH."""
    if not (req.annotations or req.outputs):
        return  # nothing to check (and a no-op rebuild imports no exporter)
    from pybuild.exporters.base import DockerOutput, ImageOutput, OCIOutput
    from pybuild.exporters.convert import check_annotations, conversion, rewrite_needs_epoch
    from pybuild.oci.platform import host

    platforms = list(dict.fromkeys(req.platforms)) or [host()]
    if req.annotations:
        check_annotations(req.annotations, oci=True, index=len(platforms) > 1,
                          platforms=platforms, output="--annotation")
    for spec in req.outputs:
        if not isinstance(spec, OCIOutput | DockerOutput | ImageOutput):
            continue
        kind = _output_name(spec)
        options = dataclasses.replace(spec.image, annotations=(*req.annotations,
                                                               *spec.image.annotations))
        conv = conversion(options, output=kind,
                          default_oci=not isinstance(spec, DockerOutput),
                          default_compression=req.compression)
        check_annotations(conv.annotations, oci=conv.oci, index=len(platforms) > 1,
                          platforms=platforms, output=kind)
        if spec.image.rewrite_timestamp and req.source_date_epoch is None:
            raise rewrite_needs_epoch(kind)
        given = [k for k, v in (("compression", spec.image.compression),
                                ("compression-level", spec.image.compression_level),
                                ("force-compression", spec.image.force_compression or None))
                 if v is not None]
        if isinstance(spec, ImageOutput) and not spec.push and given:
            raise UserError(f"type=image,push=false: {given[0]} has nothing to do: pybuild's "
                            "store keeps layers uncompressed, and compresses them for "
                            "pushes and archives", code="bad-output",
                            hint="add push=true, or export with -o type=oci|docker")


def _output_name(spec: Any) -> str:
    from pybuild.exporters.base import DockerOutput, ImageOutput, OCIOutput

    match spec:
        case OCIOutput():
            return "type=oci"
        case DockerOutput():
            return "type=docker"
        case ImageOutput(push=True):
            return "type=registry"
        case _:
            return "type=image"


async def annotated(req: BuildRequest, root: Root, image: Descriptor) -> Descriptor:
    """The result with the build's `--annotation`s, written as every image output
    writes them: the store holds the result, so its names carry them too (as buildx's
    default image exporter gives them to the image it names)."""
    if not req.annotations:
        return image
    import asyncio

    from pybuild.exporters.convert import Conversion, convert_image

    return await asyncio.to_thread(convert_image, root.content, image,
                                   Conversion(annotations=req.annotations),
                                   output="--annotation")


def facts_of(req: BuildRequest, root: Root, fes: list[memo.Compiled],
             configs: list[ImageConfig]) -> BuildFacts:
    """What `rewrite-timestamp` needs of this build: the epoch, and per platform the
    diff_ids of the base image its layers stand on."""
    from pybuild.exporters.facts import BuildFacts as Facts

    if not req.outputs:
        return Facts(epoch=req.source_date_epoch)
    from pybuild.exporters.base import DockerOutput, ImageOutput, OCIOutput

    if not any(isinstance(o, OCIOutput | DockerOutput | ImageOutput)
               and o.image.rewrite_timestamp for o in req.outputs):
        return Facts(epoch=req.source_date_epoch)
    return Facts(epoch=req.source_date_epoch, base_diff_ids={
        str(config.platform): _base_diff_ids(root, fe.definition)
        for fe, config in zip(fes, configs, strict=True)})


def _base_diff_ids(root: Root, definition: Definition) -> tuple[Digest, ...]:
    """The diff_ids of the image at the bottom of the result's filesystem (its rootfs
    lineage: RUN's rootfs, COPY's base), as BuildKit's frontend hands the exporter the
    base image config; () for scratch or a base that is not an image."""
    from pybuild.content.walk import read_config, read_manifest
    from pybuild.digest import Digest
    from pybuild.llb.ops import ExecOp, FileOp, SourceOp
    from pybuild.oci import mediatypes as mt
    from pybuild.oci.descriptor import Descriptor

    inp = definition.output
    for _ in range(len(definition.ops)):
        if inp is None:
            return ()
        op = definition.ops[inp.op]
        match op:
            case ExecOp() if inp.index == 0:
                inp = op.rootfs
            case FileOp():
                inp = op.base
            case SourceOp() if op.identifier.startswith("docker-image://"):
                digest = Digest(op.identifier.rpartition("@")[2])
                if not root.content.has(digest):
                    return ()
                desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=digest,
                                  size=root.content.size(digest))
                return read_config(root.content, read_manifest(root.content, desc)).diff_ids
            case _:
                return ()
    return ()


def named_by_outputs(req: BuildRequest) -> set[str]:
    """The -t names an image output names itself (it has no name= of its own)."""
    if not req.outputs:
        return set()
    from pybuild.exporters.base import ImageOutput

    if any(isinstance(o, ImageOutput) and not o.image.names for o in req.outputs):
        return set(req.tags)
    return set()


async def run_outputs(req: BuildRequest, root: Root, result: BuildResult, events: EventSink,
                   stdout: BinaryIO | None, facts: BuildFacts) -> BuildResult:
    """Every `--output` (and `--push`), each converted from the result as it asks, with
    the build's `--annotation`s (buildx adds them to every output)."""
    if not req.outputs:
        return result
    import asyncio

    from pybuild.exporters.base import ImageOutput, with_annotations
    from pybuild.exporters.run import export

    reports: list[ExportReport] = []
    pushed: list[PushReport] = []
    platform = result.config.platform if len(req.platforms) <= 1 else None
    named = result
    for spec in req.outputs:
        spec = with_annotations(spec, req.annotations)
        if isinstance(spec, ImageOutput):
            image, pushes = await _image_output(req, root, result, spec, facts)
            pushed += pushes
            named = await asyncio.to_thread(_with_image, root, named, image)
            continue
        report = await asyncio.to_thread(
            export, root.content, result.image, spec, names=req.tags, platform=platform,
            stdout=stdout, compression=req.compression, compression_memo=root.compression_memo,
            facts=facts, warn=lambda text: events(Notice(text, level="warning")))
        events(Notice(f"exported {report.descriptor.digest} to {report.describe()}"))
        reports.append(report)
    return dataclasses.replace(named, exports=tuple(reports), pushed=tuple(pushed))


def _with_image(root: Root, result: BuildResult, image: Descriptor) -> BuildResult:
    """The result as an image output made it (what its names point to):
    its config too, which `rewrite-timestamp` changes."""
    from pybuild.content.walk import platforms_of, read_config, read_manifest
    from pybuild.oci import mediatypes as mt

    if image == result.image:
        return result
    first = image if mt.is_manifest(image.media_type) else platforms_of(root.content,
                                                                          image)[0][0]
    manifest = read_manifest(root.content, first)
    config = read_config(root.content, manifest)
    return dataclasses.replace(result, image=image, config=config,
                               config_digest=manifest.config.digest)


async def _image_output(req: BuildRequest, root: Root, result: BuildResult,
                        spec: ImageOutput, facts: BuildFacts
                        ) -> tuple[Descriptor, list[PushReport]]:
    """`type=image[,push=true]`: the result converted as the output asks (media types,
    annotations, timestamps), named (its own names, else -t) and pushed with its layers
    compressed as asked. The store keeps layers uncompressed, as always: the names point
    at the converted image, the registry gets it compressed."""
    import asyncio

    from pybuild import distribution
    from pybuild.builder.image import rfc3339
    from pybuild.exporters.convert import conversion, convert_image
    from pybuild.oci.reference import Reference

    names = spec.image.names or req.tags
    if spec.push and not names:
        raise UserError("pushing needs a name: give -t NAME or name=REF in the output")
    kind = _output_name(spec)
    conv = conversion(spec.image, output=kind, default_oci=True,
                      default_compression=req.compression)
    stored = dataclasses.replace(conv, compression=None)
    image = await asyncio.to_thread(convert_image, root.content, result.image, stored,
                                    facts=facts, memo_path=root.compression_memo, output=kind)
    out = []
    for name in names:
        ref = Reference.parse(name)
        tag(root, name, image, result.config.created or rfc3339(time.time()))
        if spec.push:
            out.append(await asyncio.to_thread(
                distribution.push, root, image, ref, registry=req.registry,
                insecure=spec.insecure, compression=conv.compression or req.compression,
                by_digest=spec.push_by_digest))
    return image, out

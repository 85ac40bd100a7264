"""The image an output writes: the stored image converted as its options say.

One implementation for every image-writing output (`type=oci`, `type=docker`,
`type=image`/`registry`, and the build's own `--annotation`), as BuildKit's image writer
(`exporter/containerimage/writer.go`) serves all of its exporters:

1. `rewrite-timestamp=true`: every layer above the base image's is rewritten with its
   timestamps clamped to SOURCE_DATE_EPOCH (`rewriteRemoteWithEpoch`: the layers the
   image shares with its base, a prefix of its diff_ids, are left alone), so the config
   gets the new diff_ids;
2. layers are compressed as `compression`, `compression-level` and `force-compression`
   ask (`layers.recompress`);
3. the manifest, its config and its layers take OCI or Docker media types
   (`oci-mediatypes`), and an index becomes an OCI index or a Docker manifest list;
4. annotations go where buildx puts them: `manifest` into the manifest (of the platform
   named, or every one), `index` into the index, `manifest-descriptor` onto the
   manifest's descriptor (in the index, or the layout's index.json for a single
   manifest), `index-descriptor` onto the index's descriptor (index.json).

Nothing that does not change is rewritten: an image converted to what it already is keeps
its digest. BuildKit's refusals are kept, with its reasons: index annotations on a
single-platform result ("index annotations not supported for single platform export"),
descriptor and index annotations or attestations with Docker media types (the Docker
formats have no place for them), a platform that is not in the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pybuild.content.store import ContentStore
from pybuild.content.walk import read_index, read_manifest
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.exporters.base import Annotation, ImageOptions
from pybuild.exporters.facts import NO_FACTS, BuildFacts
from pybuild.layers.recompress import LayerCompression, Memo, compress_layer, retime_layer, retype
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform

# BuildKit's attestation manifests (attestation-storage.md), which point at their image.
_REFERENCE_TYPE = "vnd.docker.reference.type"
_REFERENCE_DIGEST = "vnd.docker.reference.digest"
_GZIP_LEVELS = range(0, 10)  # Go's compress/gzip: 0 (store) .. 9 (best)
_ZSTD_LEVELS = range(0, 23)  # buildx's documented range; `zstd_level` maps it


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversion:
    """What an output asks of its image, with the exporter's defaults applied."""

    compression: LayerCompression | None = None  # None: layers as they are stored
    oci: bool = True  # OCI media types, else Docker's
    rewrite_timestamp: bool = False
    annotations: tuple[Annotation, ...] = ()




def conversion(options: ImageOptions, *, output: str, default_oci: bool,
               default_compression: mt.Compression | None) -> Conversion:
    """The conversion `options` ask for, checked; `output` names the output in errors
    (`type=oci`), `default_oci` is the exporter's `oci-mediatypes` default,
    `default_compression` its compression (None: keep the stored layers)."""
    kind = options.compression or default_compression
    level = options.compression_level
    if level is not None:
        match kind:
            case "gzip" if level not in _GZIP_LEVELS:
                raise _bad(output, f"compression-level={level}: gzip takes 0 to 9")
            case "zstd" if level not in _ZSTD_LEVELS:
                raise _bad(output, f"compression-level={level}: zstd takes 0 to 22")
            case "uncompressed" | None:
                raise _bad(output, f"compression-level={level} has nothing to compress "
                                   f"with compression={kind or 'none'}",
                           hint="drop compression-level, or give compression=gzip|zstd")
    if options.force_compression and kind is None:
        raise _bad(output, "force-compression=true needs a compression to force")
    return Conversion(
        compression=LayerCompression(kind=kind, level=level, force=options.force_compression)
        if kind is not None else None,
        oci=default_oci if options.oci_mediatypes is None else options.oci_mediatypes,
        rewrite_timestamp=options.rewrite_timestamp,
        annotations=options.annotations)


def _bad(output: str, message: str, hint: str | None = None) -> UserError:
    return UserError(f"{output}: {message}", code="bad-output", hint=hint)


def convert_image(store: ContentStore, desc: Descriptor, conv: Conversion, *,
                  facts: BuildFacts = NO_FACTS, memo_path: Path | None = None,
                  output: str = "the output") -> Descriptor:
    """The image `desc` (in `store`) as `conv` asks, written into the store; `desc`
    itself when nothing changes. `output` names the output in errors."""
    if conv.rewrite_timestamp and facts.epoch is None:
        raise rewrite_needs_epoch(output)
    memo = Memo(memo_path)
    notes = _Annotations.of(conv.annotations)
    if mt.is_index(desc.media_type):
        return _convert_index(store, desc, conv, notes, facts, memo, output)
    if not mt.is_manifest(desc.media_type):
        raise _bad(output, f"{desc.media_type} is not an image")
    platform = desc.platform or _config_platform(store, desc)
    check_annotations(conv.annotations, oci=conv.oci, index=False, platforms=[platform],
                      output=output)
    return _convert_manifest(store, desc, conv, platform, notes, facts, memo)


def check_annotations(annotations: tuple[Annotation, ...], *, oci: bool, index: bool,
                      platforms: list[Platform], output: str) -> None:
    """BuildKit's refusals (`ImageWriter.Commit`): descriptor and index annotations with
    Docker media types, index annotations without an index, a platform the result does
    not have. `platforms`: the result's (its manifests')."""
    if not oci:
        given = [a.level for a in annotations if a.level != "manifest"]
        if given:
            raise _bad(output, f"cannot export {given[0]} annotations with "
                               "oci-mediatypes=false (BuildKit's rule: Docker manifests "
                               "and lists have no place for them)",
                       hint="add oci-mediatypes=true, or drop the annotation")
    if not index:
        given = [a.level for a in annotations if a.level in ("index", "index-descriptor")]
        if given:
            raise _bad(output, f"{given[0]} annotations need an index, and this result is "
                               "a single-platform image (BuildKit: \"index annotations not "
                               "supported for single platform export\")",
                       hint="build several --platform values, or use manifest or "
                            "manifest-descriptor annotations")
    for a in annotations:
        if a.platform is not None and not any(_same(a.platform, p) for p in platforms):
            raise _bad(output, f"annotation {a}: the result has no platform {a.platform} "
                               f"(it has {', '.join(str(p) for p in platforms)})")


def rewrite_needs_epoch(output: str) -> UserError:
    return UserError(f"{output}: rewrite-timestamp=true needs SOURCE_DATE_EPOCH, the time "
                     "the layers' files are clamped to", code="bad-output",
                     hint="give the build --build-arg SOURCE_DATE_EPOCH=$(git log -1 "
                          "--format=%ct) or the SOURCE_DATE_EPOCH environment variable; "
                          "exporting a stored image has none (BuildKit only warns and "
                          "exports the layers unchanged)")


@dataclass(slots=True)
class _Annotations:
    index_values: dict[str, str] = field(default_factory=dict)
    index_descriptor_values: dict[str, str] = field(default_factory=dict)
    per_manifest: list[Annotation] = field(default_factory=list)

    @classmethod
    def of(cls, annotations: tuple[Annotation, ...]) -> _Annotations:
        out = cls()
        for a in annotations:
            match a.level:
                case "index":
                    out.index_values[a.key] = a.value
                case "index-descriptor":
                    out.index_descriptor_values[a.key] = a.value
                case _:
                    out.per_manifest.append(a)
        return out

    def for_platform(self, platform: Platform | None) -> tuple[dict[str, str],
                                                               dict[str, str]]:
        """(manifest annotations, manifest-descriptor annotations) of one platform's
        manifest: the unqualified ones, then those naming its platform (which win)."""
        manifest: dict[str, str] = {}
        descriptor: dict[str, str] = {}
        ordered = sorted(self.per_manifest, key=lambda a: a.platform is not None)
        for a in ordered:
            if a.platform is not None and (platform is None or not _same(a.platform, platform)):
                continue
            (manifest if a.level == "manifest" else descriptor)[a.key] = a.value
        return manifest, descriptor


def _same(a: Platform, b: Platform) -> bool:
    x = Platform.normalize(os=a.os, architecture=a.architecture, variant=a.variant)
    y = Platform.normalize(os=b.os, architecture=b.architecture, variant=b.variant)
    return (x.os, x.architecture, x.variant) == (y.os, y.architecture, y.variant)


def _config_platform(store: ContentStore, desc: Descriptor) -> Platform:
    manifest = read_manifest(store, desc)
    return ImageConfig.parse(store.read(manifest.config.digest, what="config")).platform


def _merged(old: tuple[tuple[str, str], ...], new: Mapping[str, str]
            ) -> tuple[tuple[str, str], ...]:
    if not new:
        return old
    merged = dict(old)
    merged.update(new)
    return tuple(sorted(merged.items()))


def _with_annotations(desc: Descriptor, new: Mapping[str, str]) -> Descriptor:
    return desc.with_annotations(**new) if new else desc


def _convert_index(store: ContentStore, desc: Descriptor, conv: Conversion,
                   notes: _Annotations, facts: BuildFacts, memo: Memo,
                   output: str) -> Descriptor:
    index = read_index(store, desc)
    images = {c.digest: c.platform or _config_platform(store, c) for c in index.manifests
              if mt.is_manifest(c.media_type) and c.annotation(_REFERENCE_TYPE) is None}
    check_annotations(conv.annotations, oci=conv.oci, index=True,
                      platforms=list(images.values()), output=output)
    moved: dict[Digest, Descriptor] = {}  # old image manifest digest -> its new descriptor
    children: list[Descriptor] = []
    for child in index.manifests:
        if child.digest in images and child.annotation(_REFERENCE_TYPE) is None:
            new = _convert_manifest(store, child, conv, images[child.digest], notes, facts,
                                    memo)
            moved[child.digest] = new
            children.append(new)
        elif mt.is_index(child.media_type):
            children.append(_convert_index(store, child, conv, _Annotations(), facts, memo,
                                           output))
        else:
            children.append(child)
    children = [_attestation(store, c, moved, conv, output)
                if c.annotation(_REFERENCE_TYPE) is not None else c for c in children]
    media_type = mt.OCI_INDEX if conv.oci else mt.DOCKER_MANIFEST_LIST
    annotations = _merged(index.annotations, notes.index_values)
    if (media_type == index.media_type and tuple(children) == index.manifests
            and annotations == index.annotations):
        return _with_annotations(desc, notes.index_descriptor_values)
    raw = Index(media_type=media_type, manifests=tuple(children),
                annotations=annotations).encode()
    out = Descriptor(media_type=media_type, digest=store.write(raw), size=len(raw),
                     platform=desc.platform, annotations=desc.annotations, urls=desc.urls)
    return _with_annotations(out, notes.index_descriptor_values)


def _attestation(store: ContentStore, desc: Descriptor, moved: Mapping[Digest, Descriptor],
                 conv: Conversion, output: str) -> Descriptor:
    """An attestation manifest follows its image: it names the image's new digest."""
    if not conv.oci:
        raise _bad(output, "cannot export attestations with oci-mediatypes=false (BuildKit's "
                           "rule: a Docker manifest list has no place for them)",
                   hint="add oci-mediatypes=true")
    target = desc.annotation(_REFERENCE_DIGEST)
    new = moved.get(Digest(target)) if target else None
    if new is None or str(new.digest) == target:
        return desc
    manifest = read_manifest(store, desc)
    if manifest.subject is not None and manifest.subject.digest != new.digest:
        manifest = Manifest(media_type=manifest.media_type, config=manifest.config,
                            layers=manifest.layers, annotations=manifest.annotations,
                            artifact_type=manifest.artifact_type,
                            subject=Descriptor(media_type=new.media_type, digest=new.digest,
                                               size=new.size))
        raw = manifest.encode()
        desc = Descriptor(media_type=desc.media_type, digest=store.write(raw), size=len(raw),
                          platform=desc.platform, annotations=desc.annotations)
    return desc.with_annotations(**{_REFERENCE_DIGEST: str(new.digest)})


def _convert_manifest(store: ContentStore, desc: Descriptor, conv: Conversion,
                      platform: Platform, notes: _Annotations, facts: BuildFacts,
                      memo: Memo) -> Descriptor:
    manifest_notes, descriptor_notes = notes.for_platform(platform)
    manifest = read_manifest(store, desc)
    config_desc = manifest.config
    layers = list(manifest.layers)
    diff_ids: list[Digest] | None = None
    config: ImageConfig | None = None

    def config_value() -> ImageConfig:
        nonlocal config
        if config is None:
            config = ImageConfig.parse(store.read(config_desc.digest, what="config"))
        return config

    if conv.rewrite_timestamp:
        assert facts.epoch is not None
        diff_ids = list(config_value().diff_ids)
        base = facts.base_diff_ids.get(str(platform), ())
        # BuildKit rewriteRemoteWithEpoch: the base image's layers (a prefix of the
        # diff_ids) are immutable; everything from the first difference on is rewritten.
        shared = 0
        while shared < min(len(base), len(diff_ids)) and base[shared] == diff_ids[shared]:
            shared += 1
        for i in range(shared, len(layers)):
            layers[i], diff_ids[i] = retime_layer(store, layers[i], diff_ids[i],
                                                  facts.epoch, memo=memo)
        if diff_ids != list(config_value().diff_ids):
            raw_config = config_value().replace(diff_ids=tuple(diff_ids)).encode()
            config_desc = Descriptor(media_type=config_desc.media_type,
                                     digest=store.write(raw_config), size=len(raw_config))
    if conv.compression is not None:
        need_ids = conv.compression.force and diff_ids is None and any(
            mt.layer_compression(x.media_type) not in ("uncompressed", conv.compression.kind)
            for x in layers)
        ids = diff_ids if diff_ids is not None else (
            list(config_value().diff_ids) if need_ids else None)
        layers = [compress_layer(store, layer, conv.compression,
                                 diff_id=ids[i] if ids else None, memo=memo)
                  for i, layer in enumerate(layers)]
    layers = [retype(x, oci=conv.oci) for x in layers]
    media_type = mt.OCI_MANIFEST if conv.oci else mt.DOCKER_MANIFEST
    config_type = mt.OCI_CONFIG if conv.oci else mt.DOCKER_CONFIG
    if config_desc.media_type in mt.CONFIG_TYPES and config_desc.media_type != config_type:
        config_desc = Descriptor(media_type=config_type, digest=config_desc.digest,
                                 size=config_desc.size)
    new = Manifest(media_type=media_type, config=config_desc, layers=tuple(layers),
                   annotations=_merged(manifest.annotations, manifest_notes),
                   subject=manifest.subject, artifact_type=manifest.artifact_type)
    if new == manifest:
        return _with_annotations(desc, descriptor_notes)
    raw = new.encode()
    out = Descriptor(media_type=media_type, digest=store.write(raw), size=len(raw),
                     platform=desc.platform, annotations=desc.annotations)
    return _with_annotations(out, descriptor_notes)


__all__ = ["NO_FACTS", "BuildFacts", "Conversion", "check_annotations", "conversion",
           "convert_image", "rewrite_needs_epoch"]

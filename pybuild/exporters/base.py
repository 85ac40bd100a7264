"""The Exporter role and the typed `--output` value.

`parse_output` reads buildx's CSV syntax (`type=oci,dest=out.tar,name=app:1`) into one of a
closed set of frozen dataclasses, so the rest of pybuild dispatches with `match` and never
looks at a raw key again. Keys are checked per type: a typo gets a "did you mean", a key
that only another type takes says which types take it.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Literal, Protocol

from pybuild.content.store import ContentStore
from pybuild.errors import UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform

STDOUT = "-"

Compression = Literal["gzip", "zstd", "uncompressed"]
AnnotationLevel = Literal["manifest", "index", "manifest-descriptor", "index-descriptor"]
ANNOTATION_LEVELS: tuple[AnnotationLevel, ...] = (
    "manifest", "index", "manifest-descriptor", "index-descriptor")


class Exporter(Protocol):
    """Writes an image that is already in the content store to some destination."""

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        """Export `descriptor` (a manifest or an index); returns the descriptor written."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotation:
    """`annotation[-LEVEL][[PLATFORM]].KEY=VALUE` of an output, `--annotation
    [LEVEL[[PLATFORM]]:]KEY=VALUE` of buildx: where it goes, and what. `platform` narrows
    a manifest or manifest-descriptor annotation to that platform's manifest."""

    level: AnnotationLevel
    key: str
    value: str
    platform: Platform | None = None

    def __str__(self) -> str:
        where = f"[{self.platform}]" if self.platform is not None else ""
        return f"{self.level}{where}:{self.key}={self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageOptions:
    """What every image-writing output type (oci, docker, image, registry) accepts."""

    names: tuple[str, ...] = ()
    compression: Compression | None = None  # None: keep the layers as built
    compression_level: int | None = None
    force_compression: bool = False
    oci_mediatypes: bool | None = None  # None: the exporter's default
    rewrite_timestamp: bool = False
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OCIOutput:
    """type=oci: an OCI image layout, as a tar archive (default) or a directory."""

    dest: str | None  # None: stdout if it is not a terminal (the CLI decides), as buildx
    tar: bool = True
    image: ImageOptions = ImageOptions()

    @property
    def to_stdout(self) -> bool:
        return self.dest == STDOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerOutput:
    """type=docker: a `docker save` tarball (also an OCI layout, as Docker 25+ writes)."""

    dest: str | None
    image: ImageOptions = ImageOptions()

    @property
    def to_stdout(self) -> bool:
        return self.dest == STDOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalOutput:
    """type=local: the final filesystem, written into a directory."""

    dest: str
    platform_split: bool | None = None  # None: split only for multi-platform results
    # privileged-files=true: also write device nodes, set-uid/set-gid bits and file
    # capabilities onto the host (left out by default; see exporters/local.py).
    privileged_files: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TarOutput:
    """type=tar: the final filesystem as one tar archive."""

    dest: str | None
    platform_split: bool | None = None

    @property
    def to_stdout(self) -> bool:
        return self.dest == STDOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageOutput:
    """type=image (and type=registry, which is type=image,push=true)."""

    image: ImageOptions = ImageOptions()
    push: bool = False
    push_by_digest: bool = False
    insecure: bool = False
    unpack: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheOnlyOutput:
    """type=cacheonly: build, fill the cache, export nothing."""


OutputSpec = OCIOutput | DockerOutput | LocalOutput | TarOutput | ImageOutput | CacheOnlyOutput

_IMAGE_KEYS = frozenset(
    {
        "name",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
        "rewrite-timestamp",
    }
)
_KEYS: dict[str, frozenset[str]] = {
    "oci": frozenset({"type", "dest", "tar"}) | _IMAGE_KEYS,
    "docker": frozenset({"type", "dest"}) | _IMAGE_KEYS,
    "local": frozenset({"type", "dest", "platform-split", "privileged-files"}),
    "tar": frozenset({"type", "dest", "platform-split"}),
    "image": frozenset({"type", "push", "push-by-digest", "registry.insecure", "unpack"})
    | _IMAGE_KEYS,
    "registry": frozenset({"type", "push", "push-by-digest", "registry.insecure", "unpack"})
    | _IMAGE_KEYS,
    "cacheonly": frozenset({"type"}),
}
_ANNOTATION_TYPES = frozenset({"oci", "docker", "image", "registry"})
# BuildKit's exptypes.ParseAnnotationKey: annotation[-TYPE][[PLATFORM]].KEY
_ANNOTATION_KEY = re.compile(r"^annotation(?:-([a-z-]+))?(?:\[([A-Za-z0-9_/-]+)\])?\.(\S+)$")
_TRUE = frozenset({"1", "t", "true"})  # Go's strconv.ParseBool, which buildx uses
_FALSE = frozenset({"0", "f", "false"})
_COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd", "uncompressed")
# Known to BuildKit, not written by pybuild: refused by name rather than "unknown".
_REFUSED_COMPRESSIONS = {
    "estargz": "pybuild does not write eStargz (seekable gzip) layers; zstd gives "
               "smaller and faster-to-pull layers, gzip the most compatible ones",
    "nydus": "pybuild does not write Nydus layers",
}


def _suggest(word: str, choices: frozenset[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _err(spec: str, message: str, hint: str | None = None) -> UserError:
    return UserError(f"invalid --output {spec!r}: {message}", code="bad-output", hint=hint)


def _split_fields(spec: str) -> list[str]:
    """buildx reads the value as one CSV record, so `"name=a,b"` keeps its comma."""
    try:
        rows = list(csv.reader([spec], skipinitialspace=False, strict=True))
    except csv.Error as exc:
        raise _err(spec, f"not a valid CSV record ({exc})") from None
    return [f.strip() for f in rows[0]] if rows else []


def _bool(spec: str, key: str, value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _err(spec, f"{key}={value!r} is not a boolean (use true or false)")


def _check_key(spec: str, kind: str, key: str) -> None:
    allowed = _KEYS[kind]
    if key in allowed:
        return
    if key.startswith("annotation") and kind in _ANNOTATION_TYPES:
        return  # checked by _annotation
    others = sorted(k for k, keys in _KEYS.items() if key in keys)
    if others:
        raise _err(
            spec,
            f"key {key!r} is not valid for type={kind}",
            hint=f"{key} is taken by type={', type='.join(others)}; "
            f"type={kind} takes {', '.join(sorted(allowed - {'type'}))}",
        )
    raise _err(spec, f"unknown key {key!r} for type={kind}{_suggest(key, allowed)}")


def annotation_of(key: str, value: str, *, platform_text: str | None, level_text: str,
                  where: str) -> Annotation:
    """One annotation from its parts as an output key or `--annotation` writes them;
    `where` names the flag in errors. Platforms narrow manifest annotations only."""
    if level_text not in ANNOTATION_LEVELS:
        raise UserError(f"{where}: unknown annotation type {level_text!r}"
                        f"{_suggest(level_text, ANNOTATION_LEVELS)}", code="bad-annotation",
                        hint=f"types: {', '.join(ANNOTATION_LEVELS)}")
    if not key:
        raise UserError(f"{where}: names no annotation key", code="bad-annotation")
    platform = None
    if platform_text:
        if level_text in ("index", "index-descriptor"):
            raise UserError(f"{where}: a platform ([{platform_text}]) selects one manifest; "
                            f"{level_text} annotations belong to the whole index",
                            code="bad-annotation",
                            hint="drop the platform, or use manifest[PLATFORM] or "
                                 "manifest-descriptor[PLATFORM]")
        try:
            platform = Platform.parse(platform_text)
        except UserError as exc:
            raise UserError(f"{where}: {exc.message}", code="bad-annotation") from None
    level = next(x for x in ANNOTATION_LEVELS if x == level_text)
    return Annotation(level=level, key=key, value=value, platform=platform)


def _annotation(spec: str, key: str, value: str) -> Annotation:
    m = _ANNOTATION_KEY.match(key)
    if m is None:
        raise _err(spec, f"{key!r} is not an annotation key",
                   hint="annotation[-manifest|-index|-manifest-descriptor|-index-descriptor]"
                        "[[PLATFORM]].KEY=VALUE")
    level, platform, ann_key = m.groups()
    try:
        return annotation_of(ann_key, value, platform_text=platform,
                             level_text=level or "manifest", where=f"--output {spec!r}")
    except UserError as exc:
        raise _err(spec, exc.message.removeprefix(f"--output {spec!r}: "),
                   hint=exc.hint) from None


def _compression(spec: str, attrs: dict[str, str]) -> Compression | None:
    if "compression" not in attrs:
        return None
    value = attrs["compression"].lower()
    for known in _COMPRESSIONS:
        if value == known:
            return known
    if value in _REFUSED_COMPRESSIONS:
        raise UserError(f"--output {spec!r}: compression={value} is not supported",
                        code="unsupported-option", hint=_REFUSED_COMPRESSIONS[value])
    raise _err(spec, f"unknown compression {attrs['compression']!r}"
                     f"{_suggest(value, _COMPRESSIONS)}", hint="use gzip, zstd or uncompressed")


def _image_options(spec: str, attrs: dict[str, str]) -> ImageOptions:
    names: list[str] = []
    for name in attrs.get("name", "").split(","):
        if name.strip():
            names.append(name.strip())
    compression = _compression(spec, attrs)
    level: int | None = None
    if "compression-level" in attrs:
        try:
            level = int(attrs["compression-level"])
        except ValueError:
            raise _err(
                spec, f"compression-level={attrs['compression-level']!r} is not an integer"
            ) from None
    annotations = [_annotation(spec, key, value) for key, value in attrs.items()
                   if key.startswith("annotation")]
    force = attrs.get("force-compression")
    return ImageOptions(
        names=tuple(names),
        compression=compression,
        compression_level=level,
        # BuildKit (compression.ParseAttributes) takes a bare `force-compression=` as true
        force_compression=force == "" or (force is not None
                                          and _bool(spec, "force-compression", force)),
        oci_mediatypes=_bool(spec, "oci-mediatypes", attrs["oci-mediatypes"])
        if "oci-mediatypes" in attrs
        else None,
        rewrite_timestamp=_bool(spec, "rewrite-timestamp", attrs["rewrite-timestamp"])
        if "rewrite-timestamp" in attrs
        else False,
        annotations=tuple(annotations),
    )


def _dest(spec: str, kind: str, attrs: dict[str, str], *, required: bool) -> str | None:
    dest = attrs.get("dest")
    if dest == "":
        raise _err(spec, "dest is empty")
    if dest is None and required:
        raise _err(spec, f"type={kind} needs dest=<path>")
    return dest


def _optional_bool(spec: str, attrs: dict[str, str], key: str) -> bool | None:
    return _bool(spec, key, attrs[key]) if key in attrs else None


def parse_output(spec: str) -> OutputSpec:
    """Parse one `--output`/`-o` value the way `docker buildx build` does.

    `-o DIR` (no `=`) means `type=local,dest=DIR`; `-o -` means `type=tar,dest=-` (stdout).
    """
    text = spec.strip()
    if not text:
        raise _err(spec, "empty value", hint="e.g. -o type=oci,dest=image.tar or -o ./out")
    if "=" not in text and "," not in text:
        # buildx's shorthand: a bare path is a local directory; a bare "-" is a tar on stdout.
        if text == STDOUT:
            return TarOutput(dest=STDOUT)
        return LocalOutput(dest=text)
    attrs: dict[str, str] = {}
    for field in _split_fields(text):
        if not field:
            continue
        key, sep, value = field.partition("=")
        key = key.strip().lower()  # buildx lower-cases keys, never values
        if not sep or not key:
            raise _err(spec, f"{field!r} is not KEY=VALUE")
        if key in attrs:
            raise _err(spec, f"key {key!r} is given twice")
        attrs[key] = value
    kind = attrs.get("type")
    if kind is None:
        raise _err(spec, "type is required", hint="e.g. type=oci,dest=image.tar")
    kind = kind.lower()
    if kind not in _KEYS:
        raise _err(
            spec,
            f"unknown output type {kind!r}{_suggest(kind, frozenset(_KEYS))}",
            hint=f"types: {', '.join(sorted(_KEYS))}",
        )
    for key in attrs:
        _check_key(spec, kind, key)

    match kind:
        case "oci":
            tar = _bool(spec, "tar", attrs["tar"]) if "tar" in attrs else True
            dest = _dest(spec, kind, attrs, required=not tar)
            if dest == STDOUT and not tar:
                raise _err(spec, "tar=false writes a directory, which cannot go to stdout")
            return OCIOutput(dest=dest, tar=tar, image=_image_options(spec, attrs))
        case "docker":
            return DockerOutput(
                dest=_dest(spec, kind, attrs, required=False), image=_image_options(spec, attrs)
            )
        case "local":
            dest = _dest(spec, kind, attrs, required=True)
            assert dest is not None
            if dest == STDOUT:
                raise _err(spec, "type=local writes a directory, which cannot go to stdout",
                           hint="use type=tar,dest=- for a tar stream")
            return LocalOutput(
                dest=dest, platform_split=_optional_bool(spec, attrs, "platform-split"),
                privileged_files=_optional_bool(spec, attrs, "privileged-files") or False,
            )
        case "tar":
            return TarOutput(
                dest=_dest(spec, kind, attrs, required=False),
                platform_split=_optional_bool(spec, attrs, "platform-split"),
            )
        case "image" | "registry":
            image = _image_options(spec, attrs)
            # type=registry is buildx's shorthand for type=image,push=true.
            # Without name=, the build's -t names are pushed (as buildx does).
            push = _bool(spec, "push", attrs["push"]) if "push" in attrs else kind == "registry"
            return ImageOutput(
                image=image,
                push=push,
                push_by_digest=_optional_bool(spec, attrs, "push-by-digest") or False,
                insecure=_optional_bool(spec, attrs, "registry.insecure") or False,
                unpack=_optional_bool(spec, attrs, "unpack") or False,
            )
        case _:
            return CacheOnlyOutput()


def with_annotations(spec: OutputSpec, annotations: tuple[Annotation, ...]) -> OutputSpec:
    """`spec` with the build's `--annotation`s before its own (buildx adds them to every
    output; an image output's own keys win)."""
    match spec:
        case OCIOutput() | DockerOutput() | ImageOutput() if annotations:
            image = dataclasses.replace(spec.image,
                                        annotations=(*annotations, *spec.image.annotations))
            return dataclasses.replace(spec, image=image)
        case _:
            return spec

"""Where an image lives, as one typed value, and the one parser of its text forms.

The forms are skopeo's (containers/image `alltransports.ParseImageName`: the transport
name, a colon, the reference within the transport) plus BuildKit's two URL-like ones:

    oci:DIR[:NAME|:@INDEX]            an OCI layout directory
    oci-archive:FILE[:NAME|:@INDEX]   an OCI layout as a tar
    docker-archive:FILE[:REF|:@INDEX] a `docker save` archive (REF is tagged, never pinned)
    docker://REF                      a registry
    oci-layout://DIR[:TAG][@DIGEST]   BuildKit's layout form (buildx `util/ocilayout.Parse`)
    docker-image://REF                BuildKit's registry form (`--build-context`)

As in containers/image, the path of the colon forms ends at the first colon. A bare path
or reference has no transport: callers that accept one (`-o DIR`, `--cache-from REF`,
`--build-context name=DIR`) decide what it means before asking here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.reference import Reference

# image-spec annotations.md: the grammar of org.opencontainers.image.ref.name, which
# containers/image's `oci:` transport enforces (oci/internal ValidateImageName).
_ALNUM = r"[A-Za-z0-9]+"
_COMPONENT = rf"{_ALNUM}(?:(?:[-._:@+]|--){_ALNUM})*"
_REF_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
# distribution/reference TagRegexp and DigestRegexp, as buildx's oci-layout parser uses.
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class OCILayoutLocation:
    """An OCI layout directory; the image is chosen by name, digest or position (none of
    them: the layout's only image)."""

    path: str
    name: str | None = None
    digest: Digest | None = None
    index: int | None = None
    form: Literal["oci", "oci-layout"] = "oci"  # how it was written, to write it back

    def __str__(self) -> str:
        if self.form == "oci-layout":
            return ("oci-layout://" + self.path + (f":{self.name}" if self.name else "")
                    + (f"@{self.digest}" if self.digest else ""))
        return "oci:" + self.path + _suffix(self.name, self.index)


@dataclass(frozen=True, slots=True, kw_only=True)
class OCIArchiveLocation:
    path: str
    name: str | None = None
    index: int | None = None

    def __str__(self) -> str:
        return "oci-archive:" + self.path + _suffix(self.name, self.index)


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerArchiveLocation:
    path: str
    reference: Reference | None = None  # RepoTags entry to read or write
    index: int | None = None  # position in manifest.json (reading)

    def __str__(self) -> str:
        ref = self.reference.familiar if self.reference is not None else None
        return "docker-archive:" + self.path + _suffix(ref, self.index)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryLocation:
    reference: Reference
    form: Literal["docker", "docker-image"] = "docker"

    def __str__(self) -> str:
        return f"{self.form}://{self.reference.familiar}"


ImageLocation = OCILayoutLocation | OCIArchiveLocation | DockerArchiveLocation | RegistryLocation


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportedImage:
    """An image read into the content store, and the names its source records for it
    (full references: `io.containerd.image.name`, a reference-shaped
    `org.opencontainers.image.ref.name`, docker's `RepoTags`), so that `load` without
    `-t` can name it."""

    descriptor: Descriptor  # without the layout's naming annotations
    names: tuple[str, ...] = ()


def _suffix(name: str | None, index: int | None) -> str:
    if index is not None:
        return f":@{index}"
    return f":{name}" if name else ""


def _bad(text: str, why: str, hint: str | None = None) -> UserError:
    return UserError(f"invalid image location {text!r}: {why}", code="bad-location",
                     hint=hint)


_TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker")
_URL_FORMS = ("oci-layout://", "docker-image://", "docker://")


def has_transport(text: str) -> bool:
    """Whether `text` starts with one of the transports `parse_location` knows."""
    return text.startswith(_URL_FORMS) or text.partition(":")[0] in _TRANSPORTS


def parse_location(text: str) -> ImageLocation:
    """The location `text` names; a UserError naming the text and the forms otherwise."""
    if text.startswith("oci-layout://"):
        return _oci_layout_url(text, text.removeprefix("oci-layout://"))
    if text.startswith("docker-image://"):
        return RegistryLocation(reference=_registry_ref(text, text.removeprefix(
            "docker-image://")), form="docker-image")
    transport, sep, within = text.partition(":")
    match transport if sep else "":
        case "docker":
            if not within.startswith("//"):
                raise _bad(text, "a registry reference is written docker://REF")
            return RegistryLocation(reference=_registry_ref(text, within[2:]))
        case "oci":
            path, name, index = _path_and_name(text, within, _oci_name)
            return OCILayoutLocation(path=path, name=name, index=index)
        case "oci-archive":
            path, name, index = _path_and_name(text, within, _oci_name)
            return OCIArchiveLocation(path=path, name=name, index=index)
        case "docker-archive":
            path, tag, index = _path_and_name(text, within, _archive_tag)
            return DockerArchiveLocation(path=path, reference=Reference.parse(tag)
                                         if tag else None, index=index)
    raise _bad(text, "expected TRANSPORT:REFERENCE",
               hint="transports: oci:DIR, oci-archive:FILE, docker-archive:FILE, "
                    "docker://REF, oci-layout://DIR")


def _registry_ref(text: str, ref: str) -> Reference:
    if not ref:
        raise _bad(text, "no image reference")
    try:
        return Reference.parse(ref)
    except UserError as exc:
        raise _bad(text, exc.message) from None


def _path_and_name(text: str, within: str, check: Callable[[str, str], None]
                   ) -> tuple[str, str | None, int | None]:
    """containers/image: the path ends at the first colon; `@N` is a position."""
    path, sep, image = within.partition(":")
    if not path:
        raise _bad(text, "no path")
    if not sep or not image:
        return path, None, None
    if image.startswith("@"):
        digits = image[1:]
        if not digits.isdigit():
            raise _bad(text, f"@{digits}: a source index is a number (@0, @1, ...)")
        return path, None, int(digits)
    check(text, image)
    return path, image, None


def _oci_name(text: str, name: str) -> None:
    if not _REF_NAME.match(name):
        raise _bad(text, f"{name!r} is not a valid image name for a layout")


def _archive_tag(text: str, ref: str) -> None:
    try:
        parsed = Reference.parse(ref)
    except UserError as exc:
        raise _bad(text, exc.message) from None
    if parsed.digest is not None:
        raise _bad(text, "a docker archive names images by tag, not by digest")


def _oci_layout_url(text: str, body: str) -> OCILayoutLocation:
    """buildx `util/ocilayout.Parse`: `@DIGEST`, then `:TAG`, each taken from the right
    only when it has that shape (so `dir:with:colons` stays a path)."""
    digest: Digest | None = None
    at = body.rfind("@")
    if at >= 0 and _DIGEST.match(body[at + 1:]):
        try:
            digest = Digest(body[at + 1:])
        except UserError:
            raise _bad(text, f"{body[at + 1:]}: not a sha256 digest") from None
        body = body[:at]
    tag: str | None = None
    colon = body.rfind(":")
    if colon >= 0 and _TAG.match(body[colon + 1:]):
        body, tag = body[:colon], body[colon + 1:]
    if not body:
        raise _bad(text, "no directory")
    return OCILayoutLocation(path=body, name=tag, digest=digest, form="oci-layout")

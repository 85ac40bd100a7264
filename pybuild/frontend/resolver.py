"""What the frontend needs from outside: image metadata, and named build contexts.

The frontend never pulls or reads a store: it asks an `ImageMetaResolver` (declared here,
implemented by the builder) for the config of a base image, addressed by an `ImageRef`
(a normalized registry reference) or a `LayoutRef` (an OCI layout named context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.oci.config import ImageConfig
from pybuild.oci.platform import Platform


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedImage:
    name: str  # canonical reference string without digest, e.g. docker.io/library/busybox:latest
    digest: Digest  # the platform manifest digest
    config: ImageConfig


class ImageMetaResolver(Protocol):
    """address + platform -> digest + config. `ref` is `str(ImageRef)` (a normalized
    reference such as `docker.io/library/busybox:latest`) or `str(LayoutRef)`
    (`oci-layout://DIR@DIGEST` / `oci-layout://DIR:TAG`); `parse_address` turns it back."""

    def resolve(self, ref: str, platform: Platform) -> ResolvedImage: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRef:
    """A base image in a registry (or the local store): a normalized reference."""

    ref: str

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True, slots=True, kw_only=True)
class LayoutRef:
    """An image in an OCI layout directory, selected by digest or by tag."""

    path: str
    digest: str = ""  # "sha256:…"
    tag: str = ""

    def __str__(self) -> str:
        if self.digest:
            return f"oci-layout://{self.path}@{self.digest}"
        return f"oci-layout://{self.path}:{self.tag}" if self.tag else \
            f"oci-layout://{self.path}"

    @classmethod
    def parse(cls, value: str) -> LayoutRef:
        """`DIR@DIGEST`, `DIR:TAG` or `DIR` (the part after `oci-layout://`)."""
        if "@" in value:
            path, _, digest = value.rpartition("@")
            return cls(path=path or value, digest=digest)
        path, sep, tag = value.rpartition(":")
        if not sep or not path:
            return cls(path=value)
        return cls(path=path, tag=tag)


ImageAddress = ImageRef | LayoutRef


def parse_address(ref: str) -> ImageAddress:
    """The typed address behind a resolver's `ref` string."""
    if ref.startswith("oci-layout://"):
        return LayoutRef.parse(ref.removeprefix("oci-layout://"))
    return ImageRef(ref=ref)


# "git" and "http" contexts are fetched by the build's edge (pybuild.contexts) into "local"
# ones before the frontend sees them.
NamedContextKind = Literal["image", "local", "oci-layout", "git", "http"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedContext:
    """A `--build-context name=VALUE`: kind "image" (value: a reference), "local" (value: a
    directory) or "oci-layout" (value: `DIR@DIGEST` or `DIR:TAG`)."""

    kind: NamedContextKind
    value: str


def parse_named_context(text: str) -> NamedContext:
    """The value of `--build-context name=VALUE`, as buildx spells it."""
    kind: NamedContextKind
    if text.startswith("docker-image://"):
        value, kind = text.removeprefix("docker-image://"), "image"
    elif text.startswith("oci-layout://"):
        value, kind = text.removeprefix("oci-layout://"), "oci-layout"
    elif text.startswith("local:"):
        value, kind = text.removeprefix("local:"), "local"
    elif "://" in text or text.startswith(("git@", "input:", "target:")):
        raise UserError(f"named context {text!r} is not supported yet",
                        hint="use docker-image://REF, oci-layout://DIR@DIGEST or a "
                             "local directory")
    else:
        value, kind = text, "local"
    if not value:
        raise UserError(f"invalid named context {text!r}: empty value")
    return NamedContext(kind=kind, value=value)

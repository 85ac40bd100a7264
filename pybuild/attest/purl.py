"""Package URLs (github.com/package-url/purl-spec) in the two spellings the peers write.

`purl` writes what Syft (BuildKit's SBOM scanner) writes, through anchore's packageurl-go:
qualifiers sorted by key, empty ones dropped, every component percent-encoded except
unreserved characters (so `+` in a Debian version is `%2B`, `@scope` is `%40scope`),
namespace segments encoded one by one. `image_purl` writes what BuildKit writes for
images in provenance materials and subjects (github.com/package-url/packageurl-go through
BuildKit's util/purl.RefToPURL): qualifiers in the order given (digest, then platform),
version and qualifier values path-escaped, so `linux/amd64` is `linux%2Famd64`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote

from pybuild.oci.platform import Platform
from pybuild.oci.reference import DOCKER_HUB, Reference


def _escape(text: str) -> str:
    # Go's url.QueryEscape with " " as %20: only ALPHA / DIGIT / "-._~" stay as they are.
    return quote(text, safe="")


def purl(
    kind: str,
    name: str,
    version: str = "",
    *,
    namespace: str = "",
    qualifiers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    subpath: str = "",
) -> str:
    """`pkg:KIND/NAMESPACE/NAME@VERSION?QUALIFIERS#SUBPATH`, as Syft spells it."""
    items = qualifiers.items() if isinstance(qualifiers, Mapping) else qualifiers
    parts = [kind]
    parts += [_escape(seg) for seg in namespace.split("/") if seg]
    tail = _escape(name)
    if version:
        tail += "@" + _escape(version)
    parts.append(tail)
    out = "pkg:" + "/".join(parts)
    pairs = sorted((k, v) for k, v in items if v)
    if pairs:
        out += "?" + "&".join(f"{_escape(k)}={_escape(v)}" for k, v in pairs)
    if subpath:
        out += "#" + subpath
    return out


def _go_path_escape(text: str) -> str:
    # Go's url.PathEscape: unreserved plus the sub-delims a path segment may hold.
    return quote(text, safe="$&+:=@")


def _go_query_escape(text: str) -> str:
    return quote(text, safe=" ").replace(" ", "+")


def image_purl(ref: str, platform: Platform | None = None, *, kind: str = "docker") -> str:
    """BuildKit's `pkg:docker/NAMESPACE/NAME@TAG?digest=...&platform=...` for an image ref.

    `kind` is "docker" for registry images, "oci" for images from a local layout
    (BuildKit's `oci-layout://` sources). A ref with a digest gets a `digest` qualifier
    and, when it has no tag, no version; a ref with neither gets the tag `latest`.
    """
    reference = Reference.parse(ref)
    qualifiers: list[tuple[str, str]] = []
    if reference.digest:
        qualifiers.append(("digest", str(reference.digest)))
    tag = reference.tag
    familiar = reference.repository
    if reference.domain == DOCKER_HUB:
        familiar = reference.path.removeprefix("library/")
    namespace, _, name = familiar.rpartition("/")
    if platform is not None:
        normal = Platform.normalize(os=platform.os, architecture=platform.architecture,
                                    variant=platform.variant)
        qualifiers.append(("platform", str(normal)))
    out = f"pkg:{kind}/"
    if namespace:
        out += "/".join(_go_query_escape(seg) for seg in namespace.split("/")) + "/"
    out += _go_query_escape(name)
    if tag:
        out += "@" + _go_path_escape(tag)
    if qualifiers:
        out += "?" + "&".join(f"{k}={_go_path_escape(v)}" for k, v in qualifiers)
    return out

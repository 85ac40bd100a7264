"""parse_location: skopeo's transport:reference forms and BuildKit's URL forms, one parser.

The rules are containers/image's (oci/internal SplitPathAndImage, ValidateImageName,
docker/archive ParseReference, alltransports ParseImageName) and buildx's
util/ocilayout.Parse.
"""

from __future__ import annotations

import pytest

from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.oci.reference import Reference
from pybuild.transports.names import (
    DockerArchiveLocation,
    OCIArchiveLocation,
    OCILayoutLocation,
    RegistryLocation,
    has_transport,
    parse_location,
)

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("oci:/tmp/layout", OCILayoutLocation(path="/tmp/layout")),
    ("oci:layout:latest", OCILayoutLocation(path="layout", name="latest")),
    # the path ends at the first colon; the rest is the name (which may hold colons)
    ("oci:dir:app:1", OCILayoutLocation(path="dir", name="app:1")),
    ("oci:dir:ghcr.io/o/app:v2", OCILayoutLocation(path="dir", name="ghcr.io/o/app:v2")),
    ("oci:dir:@2", OCILayoutLocation(path="dir", index=2)),
    ("oci:dir:", OCILayoutLocation(path="dir")),
    ("oci-archive:/x/img.tar", OCIArchiveLocation(path="/x/img.tar")),
    ("oci-archive:img.tar:v1", OCIArchiveLocation(path="img.tar", name="v1")),
    ("oci-archive:img.tar:@0", OCIArchiveLocation(path="img.tar", index=0)),
    ("docker-archive:a.tar", DockerArchiveLocation(path="a.tar")),
    ("docker-archive:a.tar:app", DockerArchiveLocation(
        path="a.tar", reference=Reference.parse("app:latest"))),
    ("docker-archive:a.tar:localhost:5000/x/y:z", DockerArchiveLocation(
        path="a.tar", reference=Reference.parse("localhost:5000/x/y:z"))),
    ("docker-archive:a.tar:@1", DockerArchiveLocation(path="a.tar", index=1)),
    ("docker://busybox", RegistryLocation(reference=Reference.parse("busybox:latest"))),
    ("docker://ghcr.io/o/app@" + D, RegistryLocation(
        reference=Reference.parse("ghcr.io/o/app@" + D))),
    ("docker-image://alpine:3", RegistryLocation(
        reference=Reference.parse("alpine:3"), form="docker-image")),
    # buildx util/ocilayout.Parse: @DIGEST then :TAG, from the right, by shape
    ("oci-layout:///l", OCILayoutLocation(path="/l", form="oci-layout")),
    ("oci-layout://l:v1", OCILayoutLocation(path="l", name="v1", form="oci-layout")),
    ("oci-layout://l@" + D, OCILayoutLocation(path="l", digest=Digest(D), form="oci-layout")),
    ("oci-layout://l:v1@" + D, OCILayoutLocation(path="l", name="v1", digest=Digest(D),
                                                 form="oci-layout")),
    ("oci-layout://a:b/c", OCILayoutLocation(path="a:b/c", form="oci-layout")),
    ("oci-layout://dir@notadigest", OCILayoutLocation(path="dir@notadigest",
                                                      form="oci-layout")),
])
def test_forms(text: str, expected: object) -> None:
    assert parse_location(text) == expected
    assert has_transport(text)


@pytest.mark.parametrize("text", [
    "oci:/tmp/layout", "oci:layout:latest", "oci:dir:@2", "oci-archive:img.tar:v1",
    "docker-archive:a.tar:@1", "oci-layout://l:v1@" + D, "oci-layout://l@" + D,
])
def test_text_round_trips(text: str) -> None:
    assert str(parse_location(text)) == text
    assert parse_location(str(parse_location(text))) == parse_location(text)


def test_registry_forms_print_familiar_names() -> None:
    assert str(parse_location("docker://docker.io/library/busybox:latest")) == \
        "docker://busybox:latest"
    assert str(parse_location("docker-archive:a.tar:docker.io/library/app:1")) == \
        "docker-archive:a.tar:app:1"


@pytest.mark.parametrize(("text", "why"), [
    ("/just/a/path", "expected TRANSPORT:REFERENCE"),
    ("busybox:latest", "expected TRANSPORT:REFERENCE"),
    ("dir:/x", "expected TRANSPORT:REFERENCE"),  # a transport pybuild does not have
    ("docker:busybox", "docker://REF"),
    ("docker://", "no image reference"),
    ("docker://bad..name", "invalid reference format"),
    ("oci:", "no path"),
    ("oci::latest", "no path"),
    ("oci:dir:bad name", "not a valid image name"),
    ("oci:dir:-lead", "not a valid image name"),
    ("oci:dir:@x", "source index is a number"),
    ("oci:dir:@-1", "source index is a number"),
    ("docker-archive:a.tar:app@" + D, "by tag, not by digest"),
    ("docker-archive:a.tar:Bad", "invalid reference format"),
    ("oci-layout://", "no directory"),
    ("oci-layout://:v1", "no directory"),
])
def test_refusals_name_the_text(text: str, why: str) -> None:
    with pytest.raises(UserError, match=why) as info:
        parse_location(text)
    assert repr(text) in info.value.message
    assert info.value.code == "bad-location"


def test_has_transport_is_false_for_bare_values() -> None:
    assert not has_transport("./ctx")
    assert not has_transport("busybox:latest")
    assert not has_transport("localhost:5000/app")

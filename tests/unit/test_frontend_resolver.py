"""The frontend's outside values: named contexts, typed base-image addresses, locations."""

from __future__ import annotations

import pytest

from pybuild.errors import SourceLocation, UserError
from pybuild.frontend.instructions.loc import Loc, located
from pybuild.frontend.resolver import (
    ImageRef,
    LayoutRef,
    NamedContext,
    parse_address,
    parse_named_context,
)


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("docker-image://alpine:3", "image", "alpine:3"),
    ("oci-layout:///srv/l@sha256:" + "a" * 64, "oci-layout", "/srv/l@sha256:" + "a" * 64),
    ("local:./dir", "local", "./dir"),
    ("./dir", "local", "./dir"),
])
def test_named_context_values(text: str, kind: str, value: str) -> None:
    assert parse_named_context(text) == NamedContext(kind=kind, value=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["https://github.com/a/b.git", "input:x", "target:y",
                                  "docker-image://"])
def test_named_context_refusals(text: str) -> None:
    with pytest.raises(UserError):
        parse_named_context(text)


@pytest.mark.parametrize("ref", ["oci-layout:///l@sha256:" + "b" * 64, "oci-layout:///l:v1",
                                 "oci-layout:///l", "docker.io/library/busybox:latest"])
def test_addresses_round_trip(ref: str) -> None:
    addr = parse_address(ref)
    assert str(addr) == ref
    assert isinstance(addr, LayoutRef if ref.startswith("oci-layout://") else ImageRef)


def test_located_copies_instead_of_mutating() -> None:
    exc = UserError("boom")
    loc = Loc(filename="Dockerfile", start_line=3, end_line=3, keyword="RUN",
              text="RUN caf\udce9")
    out = located(exc, loc.location())
    assert exc.location is None
    assert out is not exc and out.location == SourceLocation(
        "Dockerfile", 3, 3, instruction="RUN", text="RUN caf\ufffd")
    assert located(out, SourceLocation("x", 1, 1)) is out  # a location is never replaced

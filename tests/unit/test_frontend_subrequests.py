"""--call=outline|targets|check data, as BuildKit's outline/targets/lint subrequests give it
(dockerfile_outline_test.go, dockerfile_targets_test.go, subrequests/*)."""

from __future__ import annotations

import base64
import json

from pybuild.frontend.dockerfile2llb.convert import lint, list_targets, outline
from pybuild.frontend.dockerfile2llb.options import FrontendOptions, unused_build_args_message
from pybuild.frontend.subrequests import dumps
from tests.unit.conftest import AMD64


def _opts(df: str, **kw) -> FrontendOptions:
    kw.setdefault("platform", AMD64)
    kw.setdefault("build_platform", AMD64)
    if isinstance(kw.get("build_args"), dict):
        kw["build_args"] = tuple(kw["build_args"].items())
    return FrontendOptions(dockerfile=df.encode(), **kw)


OUTLINE_ARGS = """
ARG inherited=box
ARG inherited2=box2
ARG unused=abc${inherited2}
# sfx is a suffix
ARG sfx="usy${inherited}"

FROM b${sfx} AS first
# this is not assigned to anything
ARG FOO=123
# BAR is a number
ARG BAR=456
RUN true

FROM alpine${unused} AS second
ARG BAZ
RUN true

FROM scratch AS third
ARG ABC=a
# check=skip=all
ARG password
# alternate_password will show up in the outline
# check=skip=all
ARG alternate_password

# target defines build target
FROM third AS target
COPY --from=first /etc/passwd /

FROM second
"""


def test_outline_args(fe) -> None:
    """testOutlineArgs."""
    o = outline(_opts(OUTLINE_ARGS, build_args={"BAR": "678"}, target="target"), fe.resolver)
    assert (o.name, o.description) == ("target", "defines build target")
    assert o.sources == (OUTLINE_ARGS.encode(),)
    got = [(a.name, a.value, a.description, a.location.start_line if a.location else 0)
           for a in o.args]
    assert got == [("inherited", "box", "", 2), ("sfx", "usybox", "is a suffix", 6),
                   ("FOO", "123", "", 10), ("BAR", "678", "is a number", 12),
                   ("ABC", "a", "", 20), ("password", "", "", 22),
                   ("alternate_password", "", "will show up in the outline", 25)]


def test_outline_secrets_and_ssh(fe) -> None:
    """testOutlineSecrets: only what the target needs, ids expanded, by line."""
    df = """
FROM busybox AS first
RUN --mount=type=secret,target=/etc/passwd,required=true --mount=type=ssh true

FROM alpine AS second
RUN --mount=type=secret,id=unused --mount=type=ssh,id=ssh2 true

FROM scratch AS third
ARG BAR
RUN --mount=type=secret,id=second${BAR} true

FROM third AS target
COPY --from=first /foo /
RUN --mount=type=ssh,id=ssh3,required true

FROM second
"""
    o = outline(_opts(df, build_args={"BAR": "678"}, target="target"), fe.resolver)
    assert [(s.name, s.required, s.location.start_line) for s in o.secrets if s.location] == [
        ("passwd", True, 3), ("second678", False, 10)]
    assert [(s.name, s.required, s.location.start_line) for s in o.ssh if s.location] == [
        ("default", False, 3), ("ssh3", True, 14)]


def test_outline_recursive_args(fe) -> None:
    """testOutlineRecursiveArgs: meta args used through other args' defaults count."""
    df = """
ARG FOO=123
ARG ABC=abc
ARG DEF=def
ARG FOO=${FOO}${ABC}
ARG BAR=${FOO}456
ARG FOO=${FOO}456${BAR}
FROM scratch
ARG FOO
ARG INFOO=123
ARG INBAR=${INFOO}456
ARG INFOO=${INFOO}456${INBAR}
"""
    o = outline(_opts(df), fe.resolver)
    assert [(a.name, a.value) for a in o.args] == [
        ("ABC", "abc"), ("BAR", "123abc456"), ("FOO", "123abc456123abc456"),
        ("INBAR", "123456"), ("INFOO", "123456123456")]


def test_outline_json_and_text(fe) -> None:
    o = outline(_opts("# base is the base\nFROM scratch AS base\n# V the version\nARG V=1\n"
                      "RUN --mount=type=secret,id=tok,required true\n", target="base"),
                fe.resolver)
    data = json.loads(dumps(o))
    assert data == {
        "name": "base", "description": "is the base",
        "args": [{"name": "V", "description": "the version", "value": "1",
                  "location": {"ranges": [{"start": {"line": 4}, "end": {"line": 4}}]}}],
        "secrets": [{"name": "tok", "required": True,
                     "location": {"ranges": [{"start": {"line": 5}, "end": {"line": 5}}]}}],
        "sources": [base64.b64encode(o.sources[0]).decode()],
    }
    assert o.to_text() == ("TARGET:      base\nDESCRIPTION: is the base\n\n"
                           "BUILD ARG   VALUE   DESCRIPTION\nV           1       the version\n\n"
                           "SECRET   REQUIRED\ntok      true\n\n")


def test_targets_list() -> None:
    """testTargetsList."""
    df = ("\n# build defines stage for compiling the binary\nFROM alpine AS build\nRUN true\n\n"
          "FROM busybox as second\nRUN false\n\nFROM alpine\nRUN false\n\n"
          "# binary returns the compiled binary\nFROM second AS binary\n")
    t = list_targets(df.encode())
    assert t.sources == (df.encode(),)
    assert [(x.name, x.base, x.description, x.default, x.location.start_line if x.location
             else 0) for x in t.targets] == [
        ("build", "alpine", "defines stage for compiling the binary", False, 3),
        ("second", "busybox", "", False, 6), ("", "alpine", "", False, 9),
        ("binary", "second", "returns the compiled binary", True, 13)]
    assert json.loads(dumps(t))["targets"][3] == {
        "name": "binary", "default": True, "description": "returns the compiled binary",
        "base": "second", "location": {"ranges": [{"start": {"line": 13},
                                                   "end": {"line": 13}}]}}
    assert t.to_text() == ("TARGET           DESCRIPTION\n"
                           "build            defines stage for compiling the binary\n"
                           "second           \n"
                           "                 \n"
                           "binary (default) returns the compiled binary\n")


def test_lint_report_json_and_text(fe) -> None:
    df = "FROM scratch\nMAINTAINER me\n"
    report = lint(_opts(df), fe.resolver)
    data = json.loads(dumps(report))
    assert data["warnings"] == [{
        "ruleName": "MaintainerDeprecated",
        "description": "The MAINTAINER instruction is deprecated, use a label instead to "
                       "define an image author",
        "url": "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
        "detail": "Maintainer instruction is deprecated in favor of using label",
        "location": {"ranges": [{"start": {"line": 2}, "end": {"line": 2}}]}}]
    assert data["sources"][0]["filename"] == "Dockerfile"
    assert "buildError" not in data and report.status_code == 1
    assert report.to_text() == (
        "\nWARNING: MaintainerDeprecated - "
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n"
        "Maintainer instruction is deprecated in favor of using label\n"
        "Dockerfile:2\n--------------------\n   1 |     FROM scratch\n   2 | >>> MAINTAINER me\n"
        "   3 |     \n--------------------\n")
    clean = lint(_opts("FROM scratch\n"), fe.resolver)
    assert clean.status_code == 0 and not clean.warnings


def test_lint_checks_every_stage_unless_a_target(fe) -> None:
    df = "FROM scratch AS a\nMAINTAINER x\nFROM scratch AS b\nENV k v\n"
    assert [w.rule for w in lint(_opts(df), fe.resolver).warnings] == [
        "MaintainerDeprecated", "LegacyKeyValueFormat"]
    assert [w.rule for w in lint(_opts(df, target="a"), fe.resolver).warnings] == [
        "MaintainerDeprecated"]  # parse-time checks see every stage


def test_lint_error_true_is_reported_as_the_build_error(fe) -> None:
    df = "#check=error=true\nFROM scratch as base\n"
    report = lint(_opts(df), fe.resolver)
    assert report.error is not None
    assert report.error.message == "lint violation found for rules: FromAsCasing"


def test_unused_build_args(fe) -> None:
    r = fe.compile("ARG USED\nFROM busybox\nARG INSTAGE\nRUN true\n", build_args={
        "USED": "1", "INSTAGE": "2", "NOPE": "3", "ALSO": "4", "http_proxy": "x",
        "BUILDKIT_INLINE_CACHE": "1", "TARGETARCH": "amd64", "SOURCE_DATE_EPOCH": "0"})
    assert r.unused_build_args == ("ALSO", "NOPE")
    assert unused_build_args_message(r.unused_build_args) == (
        "[Warning] One or more build-args [ALSO NOPE] were not consumed")
    # an ARG in a stage that is not built does not consume
    r = fe.compile("FROM busybox AS a\nARG X\nFROM busybox\n", build_args={"X": "1"})
    assert r.unused_build_args == ("X",)

"""SLSA provenance in BuildKit's shapes: v0.2 and v1, min and max, validated against the
in-toto and SLSA schemas; secret values and secret-bearing build args never appear."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pybuild.attest.intoto import STATEMENT_V1, Statement, image_subjects
from pybuild.attest.provenance import (
    BUILD_TYPE_V02,
    BUILD_TYPE_V1,
    GitMaterial,
    HttpMaterial,
    ImageMaterial,
    ProvenanceInput,
    SourceFile,
    predicate,
    secret_bearing,
    statement,
)
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.llb.definition import DefinitionBuilder, OpMetadata
from pybuild.llb.ops import ExecOp, SourceOp
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform

SCHEMAS = Path(__file__).resolve().parents[2] / "testdata" / "attest" / "schemas"
TOKEN = "ghp_plantedTokenValue1234567890"
PASSWORD = "hunter2-planted-password"
SECRET_FILE_VALUE = "s3cr3t-from-a-secret-mount"
BASE = Digest("sha256:" + "1" * 64)
ADD = Digest("sha256:" + "2" * 64)
MANIFEST = Digest("sha256:" + "3" * 64)
LAYER = Descriptor(media_type=mt.OCI_LAYER_GZIP, digest=Digest("sha256:" + "4" * 64), size=99)
AMD64 = Platform(os="linux", architecture="amd64")
DOCKERFILE = (b"FROM busybox:latest\nARG GITHUB_TOKEN\nARG DB_PASSWORD\nARG FOO\n"
              b"RUN --mount=type=secret,id=npm echo ok > /foo\n")


def _input(**overrides: Any) -> ProvenanceInput:
    b = DefinitionBuilder()
    base = b.add(SourceOp(identifier=f"docker-image://docker.io/library/busybox:latest@{BASE}",
                          attrs=(("platform", "linux/amd64"),)),
                 OpMetadata(filename="Dockerfile", start_line=1, end_line=1))
    run = b.add(ExecOp(rootfs=base, args=("/bin/sh", "-c", "echo ok > /foo"),
                       env=(f"GITHUB_TOKEN={TOKEN}", f"DB_PASSWORD={PASSWORD}", "FOO=bar",
                            "PATH=/usr/bin")),
                OpMetadata(filename="Dockerfile", start_line=5, end_line=5))
    definition = b.build(run)
    values: dict[str, Any] = dict(
        started_on=datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        finished_on=datetime(2024, 3, 1, 12, 0, 7, tzinfo=UTC),
        builder_platform=AMD64,
        invocation_id="pb-1234",
        args=(("build-arg:FOO", "bar"), ("build-arg:GITHUB_TOKEN", TOKEN),
              ("build-arg:DB_PASSWORD", PASSWORD), ("build-arg:NOTE", f"uses {PASSWORD}"),
              ("label:lbl", "abc"), ("target", "prod"), ("platform", "linux/amd64"),
              ("context:foo", "https://example.invalid/foo.html"), ("filename", "Dockerfile"),
              ("vcs:source", "https://example.invalid/repo.git")),
        materials=(ImageMaterial(ref="docker.io/library/busybox:latest", digest=BASE,
                                 platform=AMD64),
                   HttpMaterial(url="https://example.invalid/file.tar.gz", digest=ADD),
                   GitMaterial(url="https://example.invalid/repo.git", commit="a" * 40)),
        secrets=(("npm", False),),
        vcs=(("source", "https://example.invalid/repo.git"), ("revision", "123456")),
        definition=definition,
        sources=(SourceFile(filename="Dockerfile", data=DOCKERFILE),),
        layers=((run.op, (LAYER,)),),
        secret_values=(TOKEN, PASSWORD, SECRET_FILE_VALUE),
    )
    values.update(overrides)
    return ProvenanceInput(**values)


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def _validate(stmt: Statement) -> dict[str, Any]:
    doc = json.loads(stmt.encode())
    version = "v1" if stmt.type == STATEMENT_V1 else "v0.1"
    jsonschema.validate(doc, _schema(f"intoto-statement-{version}.json"))
    pred = "v1" if stmt.predicate_type.endswith("/v1") else "v0.2"
    jsonschema.validate(doc["predicate"], _schema(f"slsa-provenance-{pred}.json"))
    return doc


SUBJECTS = image_subjects(["localhost:5000/app:1"], AMD64, MANIFEST)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("version", ["v0.2", "v1"])
def test_statements_validate_and_never_carry_secrets(mode: str, version: str) -> None:
    stmt = statement(_input(), SUBJECTS, mode=mode, version=version)  # type: ignore[arg-type]
    doc = _validate(stmt)
    raw = stmt.encode().decode()
    for planted in (TOKEN, PASSWORD, SECRET_FILE_VALUE, "GITHUB_TOKEN=ghp", "hunter2"):
        assert planted not in raw
    for data in _all_data(doc):  # nor inside the base64 of the Dockerfile
        assert TOKEN not in base64.b64decode(data).decode()
    assert doc["subject"] == [{"name": "pkg:docker/localhost%3A5000/app@1?platform=linux%2Famd64",
                               "digest": {"sha256": "3" * 64}}]


def _all_data(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = [value["data"]] if isinstance(value.get("data"), str) else []
        return out + [d for v in value.values() for d in _all_data(v)]
    if isinstance(value, list):
        return [d for v in value for d in _all_data(v)]
    return []


def test_v02_max_has_buildkits_shape() -> None:
    pred = predicate(_input(), mode="max", version="v0.2")
    assert pred["buildType"] == BUILD_TYPE_V02 and pred["builder"] == {"id": ""}
    assert pred["materials"] == [
        {"uri": "pkg:docker/busybox@latest?platform=linux%2Famd64", "digest": {"sha256": "1" * 64}},
        {"uri": "https://example.invalid/repo.git", "digest": {"sha1": "a" * 40}},
        {"uri": "https://example.invalid/file.tar.gz", "digest": {"sha256": "2" * 64}},
    ]
    inv = pred["invocation"]
    assert inv["configSource"] == {"entryPoint": "Dockerfile"}
    assert inv["parameters"]["frontend"] == "dockerfile.v0"
    assert inv["parameters"]["args"] == {"build-arg:FOO": "bar", "label:lbl": "abc",
                                         "target": "prod",
                                         "context:foo": "https://example.invalid/foo.html"}
    assert inv["parameters"]["secrets"] == [{"id": "npm"}]
    assert inv["parameters"]["locals"] == [{"name": "context"}, {"name": "dockerfile"}]
    assert inv["environment"] == {"platform": "linux/amd64"}
    meta = pred["metadata"]
    assert meta["buildInvocationID"] == "pb-1234"
    assert meta["buildStartedOn"] == "2024-03-01T12:00:00.123456Z"
    assert meta["completeness"] == {"parameters": False, "environment": True, "materials": False}
    assert meta["reproducible"] is False
    bk = meta["https://mobyproject.org/buildkit@v1#metadata"]
    assert bk["vcs"] == {"source": "https://example.invalid/repo.git", "revision": "123456"}
    assert bk["source"]["infos"][0]["filename"] == "Dockerfile"
    assert base64.b64decode(bk["source"]["infos"][0]["data"]) == DOCKERFILE
    steps = pred["buildConfig"]["llbDefinition"]
    assert [s["id"] for s in steps] == ["step0", "step1", "step2"]  # 2 ops + the result
    assert steps[1]["inputs"] == ["step0:0"] and steps[2]["inputs"] == ["step1:0"]
    env = steps[1]["op"]["op"]["env"]
    assert "GITHUB_TOKEN=" in env and "DB_PASSWORD=" in env and "FOO=bar" in env
    assert bk["source"]["locations"]["step1"] == {"locations": [{"ranges": [
        {"start": {"line": 5}, "end": {"line": 5}}]}]}
    assert bk["layers"] == {"step1:0": [[LAYER.to_json()]]}
    assert set(pred["buildConfig"]["digestMapping"].values()) == {"step0", "step1"}


def test_min_mode_leaves_out_build_args_labels_secrets_and_steps() -> None:
    pred = predicate(_input(), mode="min", version="v0.2")
    assert pred["invocation"]["parameters"]["args"] == {
        "target": "prod", "context:foo": "https://example.invalid/foo.html"}
    assert "secrets" not in pred["invocation"]["parameters"]
    assert "buildConfig" not in pred
    assert "layers" not in pred["metadata"]["https://mobyproject.org/buildkit@v1#metadata"]
    assert pred["metadata"]["completeness"]["parameters"] is False


def test_v1_shape_reproducible_and_hermetic() -> None:
    inp = _input(reproducible=True, network_access=False, locals=(), secret_values=())
    pred = predicate(inp, mode="max", version="v1")
    definition, run = pred["buildDefinition"], pred["runDetails"]
    assert definition["buildType"] == BUILD_TYPE_V1
    assert definition["externalParameters"]["configSource"] == {"path": "Dockerfile"}
    assert definition["externalParameters"]["request"]["frontend"] == "dockerfile.v0"
    assert definition["internalParameters"]["builderPlatform"] == "linux/amd64"
    assert len(definition["internalParameters"]["buildConfig"]["llbDefinition"]) == 3
    assert definition["resolvedDependencies"][0]["uri"] == (
        "pkg:docker/busybox@latest?platform=linux%2Famd64")
    meta = run["metadata"]
    assert meta["invocationID"] == "pb-1234" and meta["finishedOn"] == "2024-03-01T12:00:07Z"
    assert meta["buildkit_reproducible"] is True and meta["buildkit_hermetic"] is True
    assert meta["buildkit_completeness"] == {"request": False, "resolvedDependencies": True}


def test_a_secret_in_the_dockerfile_source_is_refused() -> None:
    inp = _input(sources=(SourceFile(filename="Dockerfile", data=f"# {TOKEN}\n".encode()),))
    with pytest.raises(UserError, match="secret value would appear") as err:
        predicate(inp, mode="max")
    assert TOKEN not in str(err.value) and TOKEN not in (err.value.hint or "")
    predicate(inp, mode="min")  # min mode has no sources: fine


def test_secret_bearing_names_follow_buildkits_lint_rule() -> None:
    assert secret_bearing("GITHUB_TOKEN") and secret_bearing("api_key")
    assert secret_bearing("AUTH") and secret_bearing("DB_PASSWORD")
    assert not secret_bearing("PUBLIC_KEY") and not secret_bearing("TOKENIZER")
    assert not secret_bearing("KEY_FILE") and not secret_bearing("NODE_VERSION")


def test_unnamed_builds_get_the_underscore_subject() -> None:
    (subject,) = image_subjects([], None, MANIFEST)
    assert subject.name == "_" and dict(subject.digest) == {"sha256": "3" * 64}

"""`pybuild build --call=check|outline|targets` and `--check`, against golden answers
(testdata/calls/<case>/<call>.out: exit status, stdout, stderr), as buildx's
`printResult` prints them; and that a call builds, tags and records nothing.

The goldens were written by pybuild and checked by hand against buildx's
`commands/build.go` (printResult, printValue) and BuildKit's `frontend/subrequests`
printers. `PYBUILD_UPDATE_GOLDEN=1` rewrites them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pybuild.api import Builder
from pybuild.frontend.subrequests import LintReport, Outline, TargetList
from pybuild.request import BuildRequest
from tests.integration.conftest import REPO, PybuildRunner

CALLS = REPO / "testdata" / "calls"

TABLE = [
    ("webapp", ["--call=outline"]),
    ("webapp", ["--call=outline,format=json"]),
    ("webapp", ["--call=outline", "--target", "build", "--build-arg", "VERSION=1.2.3"]),
    ("webapp", ["--call=targets"]),
    ("webapp", ["--call=targets,format=json"]),
    ("webapp", ["--check"]),
    ("legacy", ["--check"]),
    ("legacy", ["--call=check,format=json"]),
    ("legacy", ["--call=check,ignorestatus=true"]),
    ("legacy", ["--call=lint"]),  # buildx's older name
    ("legacy", ["--call=targets"]),
    ("legacy", ["--call=outline"]),
    ("broken", ["--check"]),
    ("broken", ["--call=check,format=json"]),
    ("broken", ["--call=targets"]),
]


def _slug(args: list[str]) -> str:
    return re.sub(r"[^a-zA-Z0-9.=,-]+", "_", "_".join(a.lstrip("-") for a in args))


@pytest.mark.parametrize(("case", "args"), TABLE,
                         ids=[f"{c}-{_slug(a)}" for c, a in TABLE])
def test_call_golden(pybuild: PybuildRunner, case: str, args: list[str]) -> None:
    ctx = CALLS / case
    r = pybuild("build", *args, os.path.relpath(ctx, REPO))
    got = f"exit: {r.code}\n--- stdout\n{r.out}--- stderr\n{r.err}"
    path = ctx / f"{_slug(args)}.out"
    if os.environ.get("PYBUILD_UPDATE_GOLDEN"):
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with PYBUILD_UPDATE_GOLDEN=1"
    assert got == path.read_text(encoding="utf-8")
    assert "Traceback" not in r.err and "internal error" not in r.err


def test_call_json_is_the_subrequest_result(pybuild: PybuildRunner) -> None:
    """format=json prints BuildKit's result.json: the Dockerfile in `sources`, base64."""
    r = pybuild("build", "--call=targets,format=json", str(CALLS / "webapp"))
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert [t["name"] for t in data["targets"]] == ["deps", "build", "test", "release"]
    assert data["targets"][-1]["default"] is True
    import base64

    assert base64.b64decode(data["sources"][0]) == (CALLS / "webapp/Dockerfile").read_bytes()


def test_call_builds_nothing(pybuild: PybuildRunner, tmp_path: Path) -> None:
    """No step runs, no name is given, nothing is exported: `-t` and `-o` are not used by
    a call, as with buildx (its call requests export nothing)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN touch /ran\n")
    out = tmp_path / "out"
    for call in ("--check", "--call=outline", "--call=targets"):
        r = pybuild("build", call, "-t", "calls-never-tagged:1", "-o", f"type=local,dest={out}",
                    str(ctx))
        assert r.code == 0, r.err
        assert not out.exists()
    assert "calls-never-tagged" not in pybuild("images").out


def test_check_false_builds(pybuild: PybuildRunner, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\n")
    r = pybuild("build", "--check=false", "-q", str(ctx))
    assert r.code == 0, r.err
    assert r.out.startswith("sha256:")


@pytest.mark.parametrize(("flag", "message"), [
    ("--call=bogus", "--call bogus: unsupported request"),
    ("--call=outlin", "did you mean 'outline'"),
    ("--call=check,format=yaml", "format 'yaml' is not supported"),
    ("--call=check,fromat=json", "invalid print field: fromat=json"),
    ("--call=check,ignorestatus=maybe", "invalid ignorestatus print value: maybe"),
    ("--check=maybe", "invalid --check value 'maybe'"),
])
def test_call_bad_values(pybuild: PybuildRunner, flag: str, message: str) -> None:
    r = pybuild("build", flag, str(CALLS / "webapp"))
    assert r.code == 1
    assert message in r.err
    assert len(r.err.strip().splitlines()) <= 2 and "Traceback" not in r.err


def test_builder_call(shared_root: Path) -> None:
    """The Python API: `Builder.call` answers with the frontend's values."""
    builder = Builder(shared_root)
    req = BuildRequest(context=str(CALLS / "webapp"))
    outline = builder.call(req, "outline")
    assert isinstance(outline, Outline)
    assert outline.name == "release"
    assert [a.name for a in outline.args] == ["BASE", "INDEX_URL", "VERSION", "COMMIT"]
    assert [(s.name, s.required) for s in outline.secrets] == [("netrc", True)]
    targets = builder.call(req, "targets")
    assert isinstance(targets, TargetList)
    assert [t.name for t in targets.targets] == ["deps", "build", "test", "release"]
    report = builder.call(BuildRequest(context=str(CALLS / "legacy")), "check")
    assert isinstance(report, LintReport)
    assert report.status_code == 1
    assert {w.rule for w in report.warnings} >= {"MaintainerDeprecated", "FromAsCasing"}

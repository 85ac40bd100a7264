"""Build checks (BuildKit's lint rules) are shown as buildx shows them: `WARN:` lines in
plain progress, a summary at the end, events in rawjson, `buildx.build.warnings` in the
metadata file when BUILDX_METADATA_WARNINGS is set; `# check=error=true` fails the build."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.integration.conftest import run_pybuild

DOCKERFILE = """\
FROM busybox as Build
ENV key value
RUN echo $key > /k
"""


def _ctx(tmp: Path, dockerfile: str) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_warnings_are_printed_and_recorded(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, DOCKERFILE)
    meta = tmp_path / "meta.json"
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "--metadata-file", str(meta),
                    str(ctx), env={"BUILDX_METADATA_WARNINGS": "1"})
    assert r.code == 0, r.err
    assert ("WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"
            in r.err)
    assert "WARN: StageNameCasing: Stage name 'Build' should be lowercase (line 1)" in r.err
    assert "WARN: LegacyKeyValueFormat:" in r.err
    assert " 4 warnings found:\n - StageNameCasing:" in r.err
    assert (' - SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data '
            '(ENV "key") (line 2)') in r.err
    shorts = [base64.b64decode(w["short"]).decode()
              for w in json.loads(meta.read_text())["buildx.build.warnings"]]
    assert len(shorts) == 4 and shorts[1].startswith("FromAsCasing: ")
    # Without the variable, as buildx, no warnings in the metadata file.
    r = run_pybuild(fresh_root, "build", "--metadata-file", str(meta), str(ctx))
    assert r.code == 0 and "buildx.build.warnings" not in json.loads(meta.read_text())
    raw = run_pybuild(fresh_root, "build", "--progress", "rawjson", str(ctx))
    events = [json.loads(x) for x in raw.out.splitlines() if x.startswith("{")]
    checks = [e for e in events if e["type"] == "CheckWarning"]
    assert [e["rule"] for e in checks] == ["StageNameCasing", "FromAsCasing",
                                           "LegacyKeyValueFormat", "SecretsUsedInArgOrEnv"]
    assert all(e["url"].startswith("https://docs.docker.com/go/dockerfile/rule/")
               for e in checks)


def test_check_error_true_fails_the_build(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "# check=error=true\n" + DOCKERFILE)
    r = run_pybuild(fresh_root, "build", "--progress", "rawjson", str(ctx))
    assert r.code == 1 and "lint violation found for rules" in r.err
    assert '"VertexStarted"' not in r.out and "Traceback" not in r.err


def test_a_syntax_directive_is_not_dropped_silently(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "# syntax=docker/dockerfile:1\nFROM busybox\nRUN true\n")
    r = run_pybuild(fresh_root, "build", "--progress", "plain", str(ctx))
    assert r.code == 0, r.err
    assert "docker/dockerfile:1" in r.err and "WARN:" in r.err


def test_unused_build_args_are_named(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nARG USED\nRUN echo $USED\n")
    r = run_pybuild(fresh_root, "build", "--progress", "plain", "--build-arg", "USED=1",
                    "--build-arg", "NOPE=2", str(ctx))
    assert r.code == 0, r.err
    assert "One or more build-args [NOPE] were not consumed" in r.err

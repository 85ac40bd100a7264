"""Golden tests for build-check output: `--call=check` answers (result.json and the text
buildx prints) for Dockerfiles under testdata/frontend/lint/. `pytest tests/unit
--update-golden` rewrites expected.json and expected.txt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.frontend.dockerfile2llb.convert import lint
from pybuild.frontend.dockerfile2llb.options import FrontendOptions
from tests.unit.conftest import AMD64

CASES = sorted(p for p in (Path(__file__).resolve().parents[2] / "testdata" / "frontend" /
                           "lint").iterdir() if (p / "Dockerfile").is_file())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lint_golden(fe, golden, update_golden, case: Path) -> None:
    opts = {}
    if (case / "options.json").is_file():
        opts = json.loads((case / "options.json").read_text())
    opts["build_args"] = tuple(opts.get("build_args", {}).items())
    opts["dockerignore"] = tuple(opts.get("dockerignore", ()))
    report = lint(FrontendOptions(dockerfile=(case / "Dockerfile").read_bytes(), platform=AMD64,
                                  build_platform=AMD64, **opts), fe.resolver)
    data = report.to_json()
    del data["sources"]  # the Dockerfile itself, base64
    data["statuscode"] = report.status_code
    golden(case / "expected.json", data)
    text = report.to_text() + report.error_text()
    path = case / "expected.txt"
    if update_golden:
        path.write_text(text, encoding="utf-8")
    else:
        assert path.read_text(encoding="utf-8") == text

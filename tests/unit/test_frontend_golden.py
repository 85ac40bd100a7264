"""Golden tests: the op DAG and image config of multi-stage Dockerfiles.

Each case is a directory under testdata/frontend/ holding a Dockerfile, optionally an
options.json (platform, build_args, target, named_contexts, labels), and the expected
output expected.json. `pytest tests/unit --update-golden` rewrites expected.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.oci.platform import Platform

CASES = sorted(p for p in (Path(__file__).resolve().parents[2] / "testdata" / "frontend")
               .iterdir() if (p / "Dockerfile").is_file())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(fe, golden, case: Path) -> None:
    opts = {}
    if (case / "options.json").is_file():
        opts = json.loads((case / "options.json").read_text())
    if "platform" in opts:
        opts["platform"] = Platform.parse(opts["platform"])
    if "labels" in opts:
        opts["labels"] = tuple(opts["labels"].items())
    result = fe.compile((case / "Dockerfile").read_bytes(), **opts)
    golden(case / "expected.json", {
        "definition": result.definition.to_json(),
        "config": result.config.to_json(),
        "stage": result.stage_name,
        "warnings": [str(w) for w in result.warnings],
    })
    # the DAG is deterministic: compiling again gives the same digests
    again = fe.compile((case / "Dockerfile").read_bytes(), **opts)
    assert again.definition.to_json() == result.definition.to_json()

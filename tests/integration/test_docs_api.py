"""docs/api.md is executed: its Python examples, in order, in one fresh process with a
fresh pybuild root holding busybox:latest, exactly as a reader would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO

DOC = REPO / "docs" / "api.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_api_page_runs_as_written(fresh_root: Path, trav: Path) -> None:
    blocks = _examples()
    assert len(blocks) >= 6
    script = trav / "examples.py"
    script.write_text("\n".join(blocks))
    env = {**os.environ, "PYBUILD_ROOT": str(fresh_root), "PYTHONPATH": str(REPO)}
    # A library call must leave the process's signal handling alone: check after it ran.
    check = ("\nimport signal\n"
             "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, 'SIGTERM changed'\n"
             "print('EXAMPLES-OK')\n")
    script.write_text(script.read_text() + check)
    proc = subprocess.run([sys.executable, str(script)], cwd=trav, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EXAMPLES-OK" in proc.stdout
    assert (trav / "hello.tar").is_file() and (trav / "hello-docker.tar").is_file()
    assert "s3cret" not in proc.stdout + proc.stderr

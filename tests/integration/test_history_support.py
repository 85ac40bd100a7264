"""Helpers shared by the test_history_* suites (no tests here).

`recorded_build` builds in a subprocess through the Python API (every build records
itself) with history options the CLI has no flags for (a redaction list), and prints the
record's ref as its last line of stdout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.integration.conftest import REPO, Run

_DRIVER = r'''
import json, os, sys
from pathlib import Path
from pybuild.api import BuildRequest, Builder
from pybuild.cli.render import PlainProgress, render_error
from pybuild.errors import PybuildError
from pybuild.history import HistoryOptions
from pybuild.oci.platform import Platform
from pybuild.request import Secret

root = Path(sys.argv[1])
kw = json.loads(sys.argv[2])
redact_args = tuple(json.loads(sys.argv[3]))
kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)
          if isinstance(v, list) else v) for k, v in kw.items()}
kw["platforms"] = tuple(Platform.parse(p) for p in kw.pop("platform", "").split(",") if p)
kw["secrets"] = tuple(Secret.from_file(i, v) if kind == "file" else Secret.from_env(i, v)
                      for i, kind, v in kw.get("secrets", ()))
options = HistoryOptions.from_environ(os.environ)
options = type(options)(**{**{f: getattr(options, f) for f in options.__slots__},
                           "redact_build_args": redact_args})
builder = Builder(root, history=options)
try:
    result = builder.build(BuildRequest(**kw), on_event=PlainProgress(sys.stderr))
except PybuildError as exc:
    render_error(exc, sys.stderr)
    print(exc.build_ref, flush=True)
    sys.exit(1)
print(result.ref, flush=True)
'''


def recorded_build(root: Path, ctx: Path, *, redact_args: tuple[str, ...] = (),
                   env: dict[str, str] | None = None, timeout: float = 300,
                   **request: object) -> Run:
    """A build that leaves a record; stdout's last line is the record's ref."""
    proc = start_recorded_build(root, ctx, redact_args=redact_args, env=env, **request)
    out, err = proc.communicate(timeout=timeout)
    return Run(proc.returncode, out, err)


def start_recorded_build(root: Path, ctx: Path, *, redact_args: tuple[str, ...] = (),
                         env: dict[str, str] | None = None,
                         **request: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", _DRIVER, str(root), json.dumps({"context": str(ctx),
                                                                 **request}),
           json.dumps(list(redact_args))]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=full_env)


MULTI_STAGE = """\
FROM busybox AS base
RUN echo base > /base && sleep 0.4
FROM base AS deps
RUN echo deps; for i in 1 2 3; do echo "fetching dep $i"; done; sleep 0.6
FROM base AS tools
RUN echo tools > /tools && sleep 0.2
FROM busybox
COPY --from=deps /base /deps
COPY --from=tools /tools /tools
RUN cat /deps /tools && echo done
"""


def chromium() -> str:
    from tests.tooling import require_tool

    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    return require_tool("chromium")


def chromium_flags(profile: Path) -> list[str]:
    # As the machine notes prescribe for headless Chromium here: no sandbox (root), no
    # GPU, and none of the background connections this closed network refuses.
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
            f"--user-data-dir={profile}"]


def browse(page: Path, *args: str, fragment: str = "",
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Chromium on `page` (+ `#fragment`) with a fresh profile (removed afterwards)."""
    profile = Path(tempfile.mkdtemp(prefix="pybuild-chromium-"))
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    try:
        return subprocess.run([chromium(), *chromium_flags(profile), *args, url],
                              capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def files_under(path: Path) -> Iterator[Path]:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            yield p

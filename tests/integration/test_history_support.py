"""Helpers shared by the test_history_* suites (no tests here).

Until the build pipeline attaches a `BuildRecorder` to every build, `recorded_build` does
what it will do: a subprocess builds through `pybuild.api.build` with a recorder as its
event sink, after describing each platform's op DAG to it, and finishes the record with
the result or the error. (It reads the DAG through the API's frontend memo, as the build
itself does, so the digests are the build's own.)"""

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
from pybuild import api
from pybuild.cli.render import PlainProgress, render_error
from pybuild.errors import PybuildError
from pybuild.history import BuildRecorder, HistoryOptions, RequestSummary, tee
from pybuild.history.redact import read_secret_values
from pybuild.oci.platform import host

root = Path(sys.argv[1])
kw = json.loads(sys.argv[2])
redact_args = json.loads(sys.argv[3])
kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)
          if isinstance(v, list) else v) for k, v in kw.items()}
req = api.BuildRequest(**kw)
stores = api.Stores(root)
recorder = BuildRecorder(root, HistoryOptions.from_environ(os.environ))
summary = RequestSummary(
    name=os.path.basename(os.path.abspath(req.context)), context=req.context,
    dockerfile=req.dockerfile, target=req.target,
    platforms=tuple(p for p in req.platform.split(",") if p) or (str(host()),),
    tags=req.tags, outputs=req.outputs, build_args=req.build_args, labels=req.labels,
    secrets=tuple(s[0] for s in req.secrets), no_cache=req.no_cache, network=req.network)
ref = recorder.start(summary, redact_args=redact_args,
                     secret_values=read_secret_values(req.secrets, os.environ))
print(ref, flush=True)
try:
    prep = api._plan(req, stores)
    for p, memo in zip(prep.platforms, prep.memos, strict=True):
        fe = api._compile_memoized(stores, memo, prep.data, prep.df_path, req, p,
                                   tuple(prep.ignore_patterns))
        recorder.describe_vertices(fe.definition, platform=str(p or host()),
                                   dockerfile=prep.data)
    result = api.build(req, stores, tee(PlainProgress(sys.stderr), recorder))
except BaseException as exc:
    recorder.finish(error=exc)
    if isinstance(exc, PybuildError):
        render_error(exc, sys.stderr)
        sys.exit(1)
    raise
recorder.finish(outputs={"containerimage.digest": str(result.manifest.digest),
                         "containerimage.config.digest": str(result.config_digest)})
for problem in recorder.problems:
    print("problem:", problem, file=sys.stderr)
'''


def recorded_build(root: Path, ctx: Path, *, redact_args: tuple[str, ...] = (),
                   env: dict[str, str] | None = None, timeout: float = 300,
                   **request: object) -> Run:
    """A build that leaves a record; stdout's first line is the record's ref."""
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

"""The content-digest cache, asserted on the solver's events (never on timings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import REPO, run_pybuild

DOCKERFILE = """\
FROM busybox AS deps
RUN echo deps > /deps.txt

FROM busybox AS app
ARG FLAVOR=plain
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
COPY b.txt /b.txt
RUN cat /b.txt > /b.copy
COPY --from=deps /deps.txt /deps.txt
RUN echo "$FLAVOR" > /flavor
"""


def _events(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _started(out: str) -> list[str]:
    return [str(e["name"]) for e in _events(out) if e["type"] == "VertexStarted"]


def _misses(out: str) -> dict[str, str]:
    return {str(e["name"]): str(e["reason"]) for e in _events(out) if e["type"] == "VertexMiss"}


def _ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    return ctx


def _build(root: Path, ctx: Path, *extra: str) -> tuple[list[str], str]:
    r = run_pybuild(root, "build", "--progress", "rawjson", *extra, str(ctx))
    assert r.code == 0, r.err
    return _started(r.out), r.out


def _digest(root: Path, tag: str) -> str:
    return str(json.loads(run_pybuild(root, "inspect", tag).out)["manifest_digest"])


def test_noop_rebuild_runs_nothing(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    first, _ = _build(fresh_root, ctx, "-t", "c:1")
    assert len([n for n in first if "RUN" in n]) == 4
    again, out = _build(fresh_root, ctx, "-t", "c:2")
    assert again == []
    assert _digest(fresh_root, "c:1") == _digest(fresh_root, "c:2")
    assert sum(1 for e in _events(out) if e["type"] == "VertexCached") >= 7


def test_one_changed_file_reruns_only_its_dependents(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _build(fresh_root, ctx)
    (ctx / "b.txt").write_text("b changed\n")
    started, out = _build(fresh_root, ctx)
    names = [s.split("] ", 1)[1] for s in started]
    assert len(names) == 4, names
    assert names[0] == "COPY b.txt /b.txt"
    assert names[1] == "RUN cat /b.txt > /b.copy"
    assert "/deps.txt" in names[2] and names[2].startswith("COPY")
    # Step names show expanded variables, as BuildKit's progress does.
    assert names[3] == 'RUN echo "plain" > /flavor'
    reason = next(r for n, r in _misses(out).items() if "COPY b.txt" in n)
    assert "b.txt (modified)" in reason
    # Downstream steps name the step whose result changed under them.
    downstream = next(r for n, r in _misses(out).items() if "RUN cat /b.txt" in n)
    assert downstream == "changed input: [app 4/7] COPY b.txt /b.txt", downstream


def test_touching_mtimes_reruns_nothing(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _build(fresh_root, ctx)
    future = time.time() + 3600
    for name in ("a.txt", "b.txt"):
        os.utime(ctx / name, (future, future))
    started, _ = _build(fresh_root, ctx)
    assert started == []


def test_changed_build_arg_reruns_steps_after_its_declaration(fresh_root: Path,
                                                               tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _build(fresh_root, ctx)
    started, out = _build(fresh_root, ctx, "--build-arg", "FLAVOR=spicy")
    names = [s.split("] ", 1)[1] for s in started]
    # Every RUN after `ARG FLAVOR` has FLAVOR in its environment, so all of them re-run
    # (BuildKit does the same), while COPY steps and the other stage stay cached.
    assert len(names) == 5, names
    assert names[:4] == ["RUN cat /a.txt > /a.copy", "COPY b.txt /b.txt",
                         "RUN cat /b.txt > /b.copy", names[3]]
    assert names[3].startswith("COPY") and "/deps.txt" in names[3]
    assert names[4] == 'RUN echo "spicy" > /flavor'
    assert not any("echo deps" in n for n in names)
    reasons = _misses(out)
    first_run = next(r for n, r in reasons.items() if "RUN cat /a.txt" in n)
    assert "FLAVOR" in first_run and "'plain' -> 'spicy'" in first_run


def test_proxy_build_args_stay_out_of_the_key(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _build(fresh_root, ctx)
    started, _ = _build(fresh_root, ctx, "--build-arg", "http_proxy=http://127.0.0.1:9")
    assert started == []


def test_two_concurrent_builds_share_one_root(fresh_root: Path, tmp_path: Path) -> None:
    ctxs = []
    for i in range(2):
        ctx = tmp_path / f"ctx{i}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM busybox\nRUN echo shared > /shared\nRUN sleep 1 && echo {i} > /own\n")
        ctxs.append(ctx)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(fresh_root),
                               "build", "-t", f"conc:{i}", "--progress", "plain", str(c)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i, c in enumerate(ctxs)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert _digest(fresh_root, "conc:0") != _digest(fresh_root, "conc:1")
    for i in range(2):
        started, _ = _build(fresh_root, ctxs[i])
        assert started == []


def test_sigkill_midway_then_rebuild_reuses_finished_steps(fresh_root: Path,
                                                            tmp_path: Path) -> None:
    from pybuild.oci.validate import validate_image
    from pybuild.root import Root

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN echo one > /one\nRUN sleep 30 && echo two > /two\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(fresh_root),
                             "build", "-t", "killed:1", "--progress", "rawjson", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    deadline = time.time() + 120
    for line in proc.stdout:
        if '"VertexStarted"' in line and "sleep 30" in line:
            break
        assert time.time() < deadline
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", "sleep 30"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "a RUN process outlived the killed build"

    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n")
    started, _ = _build(fresh_root, ctx, "-t", "killed:2")
    assert [s.split("] ", 1)[1] for s in started] == ["RUN echo two > /two"]
    stores = Root(fresh_root)
    desc = stores.images.get("killed:2").descriptor
    assert validate_image(stores.content, desc)
    leftovers = list((fresh_root / "sandbox" / "tmp").iterdir())
    assert leftovers == [], f"the killed build's scratch dirs were not cleaned: {leftovers}"


def test_sigterm_stops_the_build_cleanly(fresh_root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN sleep 77\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(fresh_root),
                             "build", "--progress", "rawjson", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if '"VertexStarted"' in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    leftover = subprocess.run(["pgrep", "-f", "sleep 77"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
    assert list((fresh_root / "sandbox" / "tmp").iterdir()) == []

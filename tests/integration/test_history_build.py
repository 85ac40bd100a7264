"""Build records of real builds: a multi-stage build, a cached rebuild, a failing build,
a SIGKILLed build, two builds at once, and secrets that must reach no file written."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

from pybuild.history import store
from tests.integration.conftest import run_pybuild
from tests.integration.test_executor_support import write_context
from tests.integration.test_history_support import (
    MULTI_STAGE,
    files_under,
    recorded_build,
    start_recorded_build,
)
from tests.unit.test_history_otel import OtlpReceiver, attrs


def _ref(out: str) -> str:
    return out.splitlines()[-1].strip()


def test_multi_stage_build_and_cached_rebuild(fresh_root: Path, trav: Path) -> None:
    ctx = write_context(trav / "ctx", MULTI_STAGE)
    r = recorded_build(fresh_root, ctx, tags=["ms:1"])
    assert r.code == 0, r.err
    ref = _ref(r.out)
    record = store.load(store.resolve(fresh_root, ref))
    assert record.status == "completed"
    names = [v.name for v in record.vertices]
    assert any("[deps 1/1] RUN" in n for n in names) and any("[tools 1/1]" in n for n in names)
    deps = next(v for v in record.vertices if "[deps 1/1]" in v.name)
    assert deps.state == "done" and "fetching dep 3" in deps.log and deps.miss_reason
    assert deps.info is not None and deps.info.stage == "deps" and deps.info.inputs
    assert dict(record.outputs)["containerimage.digest"].startswith("sha256:")

    again = recorded_build(fresh_root, ctx, tags=["ms:1"])
    assert again.code == 0, again.err
    cached = store.load(store.resolve(fresh_root, _ref(again.out)))
    assert cached.cached_steps == cached.total_steps == record.total_steps

    ls = run_pybuild(fresh_root, "history", "ls")
    assert ls.code == 0, ls.err
    rows = ls.out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [cached.ref, ref]  # newest first
    assert rows[0].split()[-1] == f"{cached.total_steps}/{cached.total_steps}"
    inspect = run_pybuild(fresh_root, "history", "inspect", "^1")
    assert inspect.code == 0, inspect.err
    assert "Build Steps:" in inspect.out and deps.miss_reason in inspect.out
    logs = run_pybuild(fresh_root, "history", "logs", ref, "--step", str(deps.number))
    assert logs.code == 0, logs.err
    assert f"#{deps.number} [deps 1/1] RUN" in logs.out and "fetching dep 2" in logs.out
    assert logs.out.rstrip().splitlines()[-1].startswith(f"#{deps.number} DONE ")


def test_a_failing_build(fresh_root: Path, trav: Path) -> None:
    ctx = write_context(trav / "ctx", "FROM busybox\nRUN echo about to fail\n"
                        "RUN echo 'broken build' && exit 3\n")
    r = recorded_build(fresh_root, ctx)
    assert r.code == 1 and "exit code: 3" in r.err
    record = store.load(store.resolve(fresh_root, _ref(r.out)))
    assert record.status == "failed" and record.error is not None
    assert record.error.exit_code == 3 and record.error.start_line == 3
    failed = [v for v in record.vertices if v.state == "failed"]
    assert len(failed) == 1 and "broken build" in failed[0].log
    inspect = run_pybuild(fresh_root, "history", "inspect", record.ref)
    assert "Error:" in inspect.out and "exit code: 3" in inspect.out
    assert "> broken build" in inspect.out and "RUN echo 'broken build' && exit 3" in inspect.out
    ls = run_pybuild(fresh_root, "history", "ls", "--format", "json")
    assert json.loads(ls.out.splitlines()[0])["status"] == "Error"


def test_a_killed_build_says_so(fresh_root: Path, trav: Path) -> None:
    ctx = write_context(trav / "ctx", "FROM busybox\nRUN echo started-long-step && sleep 97\n")
    proc = start_recorded_build(fresh_root, ctx)
    try:
        deadline = time.monotonic() + 120
        while not [h for h in store.heads(fresh_root) if h.status == "running"]:
            assert time.monotonic() < deadline, "the build never started its record"
            time.sleep(0.1)
        ref = next(h.ref for h in store.heads(fresh_root) if h.status == "running")
        record_dir = store.history_root(fresh_root) / ref
        while not any("started-long-step" in v.log for v in store.load(record_dir).vertices):
            assert time.monotonic() < deadline, "the step never logged"
            time.sleep(0.2)
        assert store.load(record_dir).status == "running"
        assert "Running" in run_pybuild(fresh_root, "history", "ls").out
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    record = store.load(record_dir)
    assert record.status == "killed"
    step = record.vertices[-1]
    assert step.state == "running" and "started-long-step" in step.log
    inspect = run_pybuild(fresh_root, "history", "inspect", ref)
    assert "Killed" in inspect.out
    logs = run_pybuild(fresh_root, "history", "logs", ref)
    assert "unfinished: the build was killed" in logs.out
    deadline = time.monotonic() + 15
    while subprocess.run(["pgrep", "-f", "sleep 97"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the RUN step outlived the killed build"
        time.sleep(0.2)


def test_two_builds_at_once(fresh_root: Path, trav: Path) -> None:
    a = write_context(trav / "a", "FROM busybox\nRUN echo alpha-$(seq 1 200 | wc -l)\n")
    b = write_context(trav / "b", "FROM busybox\nRUN echo beta && sleep 0.3\n")
    procs = [start_recorded_build(fresh_root, a, no_cache=True),
             start_recorded_build(fresh_root, b, no_cache=True)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    refs = [_ref(o) for o, _ in outs]
    for ref, word in zip(refs, ("alpha-200", "beta"), strict=True):
        record = store.load(store.resolve(fresh_root, ref))
        assert record.status == "completed"
        runs = [v for v in record.vertices if "RUN" in v.name]
        assert len(runs) == 1 and word in runs[0].log
    assert {h.ref for h in store.heads(fresh_root)} == set(refs)


def test_no_secret_reaches_any_file(fresh_root: Path, trav: Path, tmp_path: Path) -> None:
    file_secret = "file-secret-5b1f9c2e77"
    env_secret = "env-secret-a83c0d5511"
    arg_secret = "arg-secret-3c9e1a7d42"
    listed_secret = "listed-secret-77d0e3b9aa"
    secret_file = trav / "tok.txt"
    secret_file.write_text(file_secret + "\n")
    ctx = write_context(trav / "ctx", (
        "FROM busybox\nARG GITHUB_TOKEN\nARG DEPLOY_CODE\n"
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok && "
        "echo \"arg=$GITHUB_TOKEN code=$DEPLOY_CODE\"\n"
        "RUN --mount=type=secret,id=envsec,env=ENVSECRET echo \"env=$ENVSECRET\"\n"
        "RUN echo \"failing with $GITHUB_TOKEN\" >&2 && exit 4\n"))
    receiver = OtlpReceiver()
    bodies: list[bytes] = []
    try:
        r = recorded_build(
            fresh_root, ctx, redact_args=("DEPLOY_CODE",),
            build_args=[["GITHUB_TOKEN", arg_secret], ["DEPLOY_CODE", listed_secret]],
            secrets=[["tok", "file", str(secret_file)], ["envsec", "env", "MY_ENV_SECRET"]],
            env={"MY_ENV_SECRET": env_secret,
                 "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        bodies = [req.SerializeToString() for req in receiver.requests]
        spans = receiver.spans()
    finally:
        receiver.close()
    assert r.code == 1, r.err  # the last step fails on purpose (its error is recorded too)
    ref = _ref(r.out)
    record = store.load(store.resolve(fresh_root, ref))
    assert record.status == "failed"
    logs = "".join(v.log for v in record.vertices)
    assert "arg=**** code=****" in logs and "env=****" in logs
    assert "failing with ****" in logs
    assert record.request.redacted_build_args == ("GITHUB_TOKEN", "DEPLOY_CODE")
    assert spans and any(attrs(s).get("vertex.status") == "failed" for s in spans)

    out = tmp_path / "out"
    out.mkdir()
    exported = run_pybuild(fresh_root, "history", "export", ref, "-o", str(out / "r.tar.gz"))
    assert exported.code == 0, exported.err
    for fmt in ("html", "svg"):
        t = run_pybuild(fresh_root, "history", "trace", ref, "--format", fmt,
                        "-o", str(out / f"t.{fmt}"))
        assert t.code == 0, t.err
    opened = run_pybuild(fresh_root, "history", "open", ref)
    assert opened.code == 0, opened.err
    texts = {"inspect": run_pybuild(fresh_root, "history", "inspect", ref).out,
             "inspect-json": run_pybuild(fresh_root, "history", "inspect", ref,
                                         "--format", "json").out,
             "logs": run_pybuild(fresh_root, "history", "logs", ref).out,
             "ls": run_pybuild(fresh_root, "history", "ls", "--format", "json").out}
    blobs = {str(p): p.read_bytes() for p in [*files_under(store.history_root(fresh_root)),
                                             *files_under(out)]}
    with tarfile.open(out / "r.tar.gz") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            blobs[f"archive:{m.name}"] = f.read() if f else b""
    blobs.update({f"otlp:{i}": b for i, b in enumerate(bodies)})
    blobs.update({f"cli:{k}": v.encode() for k, v in texts.items()})
    assert any(k.endswith("events.jsonl") for k in blobs)
    assert any(k.endswith("timeline.html") for k in blobs)
    for secret in (file_secret, env_secret, arg_secret, listed_secret):
        leaks = [k for k, data in blobs.items() if secret.encode() in _gunzipped(data)]
        assert not leaks, f"{secret} leaked into {leaks}"


def _gunzipped(data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    import gzip

    try:
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    except OSError:
        return data

"""BuildRecorder and the record store: what a build leaves, read back; states (running,
completed, failed, canceled, killed), bounds, refs, removal, concurrent writers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.builder.events import (
    Notice,
    VertexCached,
    VertexDone,
    VertexFailed,
    VertexLog,
    VertexMiss,
    VertexStarted,
)
from pybuild.errors import NotFoundError, SourceLocation, StepFailedError, UserError
from pybuild.history import BuildRecorder, HistoryOptions, RequestSummary, prune_records, store
from pybuild.history.logcap import StepLog, clip_marker, format_limit
from pybuild.llb import DefinitionBuilder, ExecOp, OpMetadata, SourceOp

REPO = Path(__file__).resolve().parents[2]
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float) -> None:
        self.t += dt


def _build(recorder: BuildRecorder, clock: Clock) -> None:
    recorder(VertexCached(digest=A, name="[base 1/2] FROM busybox"))
    recorder(VertexMiss(digest=B, name="[base 2/2] RUN make", reason="first build"))
    recorder(VertexStarted(digest=B, name="[base 2/2] RUN make"))
    clock.tick(0.5)
    recorder(VertexLog(digest=B, name="[base 2/2] RUN make", data="compiling\n"))
    clock.tick(1.5)
    recorder(VertexDone(digest=B, name="[base 2/2] RUN make", seconds=2.0))
    recorder(Notice("snapshotter: overlay"))


def test_a_completed_build_reads_back(tmp_path: Path) -> None:
    clock = Clock()
    rec = BuildRecorder(tmp_path, clock=clock)
    ref = rec.start(RequestSummary(name="app", platforms=("linux/amd64",), tags=("app:1",)))
    assert store.load(store.history_root(tmp_path) / ref).status == "running"
    _build(rec, clock)
    clock.tick(0.25)
    record = rec.finish(outputs={"containerimage.digest": C})
    assert record is not None and record.status == "completed"
    loaded = store.load(store.resolve(tmp_path, ref))
    assert loaded == record
    assert loaded.duration == pytest.approx(2.25)
    a, b = loaded.vertices
    assert (a.number, a.state, a.duration) == (1, "cached", 0.0)
    assert (b.number, b.state, b.miss_reason, b.log) == (2, "done", "first build", "compiling\n")
    assert b.duration == pytest.approx(2.0)
    assert (loaded.completed_steps, loaded.total_steps, loaded.cached_steps) == (2, 2, 1)
    assert dict(loaded.outputs) == {"containerimage.digest": C}
    assert [n.text for n in loaded.notices] == ["snapshotter: overlay"]
    head = store.read_head(store.history_root(tmp_path) / ref)
    assert head is not None and head.steps == (2, 2, 1)


def test_event_times_are_taken_when_events_carry_them(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class TimedStarted(VertexStarted):
        time: float = 0.0

    rec = BuildRecorder(tmp_path, clock=Clock(5000.0))
    rec.start(RequestSummary(name="t"))
    rec(TimedStarted(digest=A, name="x", time=4990.0))  # type: ignore[call-arg]
    record = rec.finish()
    assert record is not None and record.vertices[0].started == 4990.0


def test_failed_and_canceled_builds(tmp_path: Path) -> None:
    clock = Clock()
    rec = BuildRecorder(tmp_path, clock=clock)
    rec.start(RequestSummary(name="bad"))
    rec(VertexStarted(digest=B, name="[2/2] RUN false"))
    rec(VertexLog(digest=B, name="[2/2] RUN false", data="oops\n"))
    rec(VertexFailed(digest=B, name="[2/2] RUN false", error="exit code 3"))
    err = StepFailedError("process \"/bin/sh -c false\" did not complete successfully: "
                          "exit code: 3", step_exit_code=3,
                          location=SourceLocation("Dockerfile", 2, 2, "RUN"))
    record = rec.finish(error=err)
    assert record is not None and record.status == "failed"
    assert record.error is not None
    assert (record.error.exit_code, record.error.filename, record.error.start_line,
            record.error.vertex) == (3, "Dockerfile", 2, B)
    assert record.vertices[0].state == "failed"

    rec2 = BuildRecorder(tmp_path, clock=clock)
    rec2.start(RequestSummary(name="stopped"))
    rec2(VertexStarted(digest=C, name="[1/1] RUN sleep 100"))
    assert rec2.finish(error=asyncio.CancelledError()).status == "canceled"  # type: ignore[union-attr]
    rec3 = BuildRecorder(tmp_path, clock=clock)
    rec3.start(RequestSummary(name="ctrl-c"))
    with pytest.raises(KeyboardInterrupt), rec3:
        raise KeyboardInterrupt
    assert store.load(store.resolve(tmp_path, rec3.ref)).status == "canceled"


_KILLED = """
import os, signal, sys
from pathlib import Path
from pybuild.builder.events import VertexLog, VertexStarted
from pybuild.history import BuildRecorder, RequestSummary
rec = BuildRecorder(Path(sys.argv[1]))
print(rec.start(RequestSummary(name="doomed")), flush=True)
rec(VertexStarted(digest="sha256:" + "d" * 64, name="[1/1] RUN sleep 1000"))
rec(VertexLog(digest="sha256:" + "d" * 64, name="[1/1] RUN sleep 1000", data="started\\n"))
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_build_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path)], env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        ref = proc.stdout.readline().strip()
        record_dir = store.history_root(tmp_path) / ref
        assert store.load(record_dir).status == "running"  # its lock is held
        with pytest.raises(UserError, match="still running"):
            store.remove(record_dir)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == -signal.SIGKILL
    record = store.load(record_dir)
    assert record.status == "killed"
    assert record.vertices[0].state == "running" and record.vertices[0].log == "started\n"
    assert store.read_head(record_dir).status == "killed"  # type: ignore[union-attr]


_WRITER = """
import sys
from pathlib import Path
from pybuild.builder.events import VertexDone, VertexLog, VertexStarted
from pybuild.history import BuildRecorder, HistoryOptions, RequestSummary
root, n = Path(sys.argv[1]), int(sys.argv[2])
for i in range(3):
    rec = BuildRecorder(root, HistoryOptions(max_records=int(sys.argv[3])))
    rec.start(RequestSummary(name=f"w{n}-{i}"))
    for j in range(40):
        d = "sha256:" + format(j, "064x")
        rec(VertexStarted(digest=d, name=f"step {j}"))
        rec(VertexLog(digest=d, name=f"step {j}", data=f"writer {n} build {i} step {j}\\n" * 20))
        rec(VertexDone(digest=d, name=f"step {j}", seconds=0.0))
    rec.finish()
"""


def test_concurrent_builds_never_corrupt_each_other(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(n), "8"],
                              env=env) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    heads = store.heads(tmp_path)
    # Each start trims to the newest 8 (running ones count and stay): never more than
    # 8 + the writers running at that moment are left, and each one left is whole.
    assert 8 <= len(heads) <= 8 + 3
    for h in heads:
        record = store.load(h.path)
        writer, build = h.request.name[1:].split("-")
        assert record.status == "completed" and len(record.vertices) == 40
        for j, v in enumerate(record.vertices):
            assert v.log == f"writer {writer} build {build} step {j}\n" * 20
    assert not [n for n in os.listdir(store.history_root(tmp_path)) if n.startswith(".")]


def test_the_step_log_cap_is_buildkits(tmp_path: Path) -> None:
    assert format_limit(2 * 1024 * 1024) == "2MiB"
    assert clip_marker(2 * 1024 * 1024) == "\n[output clipped, log limit 2MiB reached]\n"
    assert format_limit(1536) == "1.5KiB" and format_limit(100) == "100B"
    log = StepLog(10)
    assert log.feed("12345") == "12345"
    assert log.feed("67890abc") == "67890" + clip_marker(10)
    assert log.feed("more") == ""
    assert log.flush() == "abcmore"  # what came after the cut, kept for the end
    clock = Clock()
    rec = BuildRecorder(tmp_path, HistoryOptions(step_log_limit=1024), clock=clock)
    rec.start(RequestSummary(name="noisy"))
    rec(VertexStarted(digest=A, name="spam"))
    for i in range(2000):
        rec(VertexLog(digest=A, name="spam", data=f"line {i}\n"))
    rec(VertexDone(digest=A, name="spam", seconds=1))
    record = rec.finish()
    assert record is not None
    log_text = record.vertices[0].log
    assert log_text.startswith("line 0\nline 1\n")
    assert "[output clipped, log limit 1KiB reached]" in log_text
    assert log_text.endswith("line 1999\n")  # the end survives (BuildKit keeps a tail)
    assert record.vertices[0].log_clipped
    assert len(log_text) < 1024 + 300 * 1024


def test_the_record_log_budget_bounds_a_whole_build(tmp_path: Path) -> None:
    rec = BuildRecorder(tmp_path, HistoryOptions(step_log_limit=-1, record_log_limit=4096))
    rec.start(RequestSummary(name="big"))
    for j in range(10):
        d = "sha256:" + format(j, "064x")
        rec(VertexStarted(digest=d, name=f"s{j}"))
        rec(VertexLog(digest=d, name=f"s{j}", data="x" * 1000))
        rec(VertexDone(digest=d, name=f"s{j}", seconds=0))
    record = rec.finish()
    assert record is not None
    total = sum(len(v.log) for v in record.vertices)
    assert total < 4096 + 200
    assert any("build log limit 4KiB reached" in v.log for v in record.vertices)


def test_describe_vertices_from_the_op_dag(tmp_path: Path) -> None:
    dag = DefinitionBuilder()
    ctx = dag.add(SourceOp(identifier="local://context"))
    base = dag.add(SourceOp(identifier="docker-image://busybox@" + A),
                   OpMetadata(description="[build 1/2] FROM busybox", stage="build",
                              filename="Dockerfile", start_line=1, end_line=1))
    run = dag.add(ExecOp(rootfs=base, args=("/bin/sh", "-c", "make"),
                         mounts=()), OpMetadata(description="[build 2/2] RUN make",
                                                stage="build", filename="Dockerfile",
                                                start_line=2, end_line=3))
    _ = ctx
    definition = dag.build(run)
    rec = BuildRecorder(tmp_path)
    rec.start(RequestSummary(name="d"))
    rec.describe_vertices(definition, platform="linux/arm64",
                          dockerfile=b"FROM busybox AS build\nRUN make \\\n  all\n")
    rec(VertexCached(digest=str(base.op), name="[build 1/2] FROM busybox"))
    record = rec.finish()
    assert record is not None
    infos = {i.digest: i for i in record.described}
    info = infos[str(run.op)]
    assert (info.stage, info.platform, info.command, info.kind) == \
        ("build", "linux/arm64", "RUN make", "exec")
    assert info.inputs == (str(base.op),)
    assert info.source == "RUN make \\\n  all"
    assert (record.completed_steps, record.total_steps) == (1, 2)  # RUN never ran


def _records(root: Path, n: int, clock: Clock) -> list[str]:
    refs = []
    for i in range(n):
        rec = BuildRecorder(root, HistoryOptions(max_age=0), clock=clock)
        refs.append(rec.start(RequestSummary(name=f"b{i}")))
        clock.tick(10)
        rec.finish()
        clock.tick(1)
    return refs


def test_refs_as_buildx_takes_them(tmp_path: Path) -> None:
    refs = _records(tmp_path, 3, Clock())
    newest = refs[-1]
    assert store.resolve(tmp_path, "").name == newest
    assert store.resolve(tmp_path, "^0").name == newest
    assert store.resolve(tmp_path, "^1").name == refs[1]
    assert store.resolve(tmp_path, "^2").name == refs[0]
    with pytest.raises(NotFoundError, match="offset 3"):
        store.resolve(tmp_path, "^3")
    with pytest.raises(UserError, match="invalid offset"):
        store.resolve(tmp_path, "^x")
    assert store.resolve(tmp_path, refs[0][:10]).name == refs[0]
    assert store.resolve(tmp_path, refs[0]).name == refs[0]
    with pytest.raises(NotFoundError, match='no record found for ref "zzzz-nope"'):
        store.resolve(tmp_path, "zzzz-nope")
    base = store.history_root(tmp_path)
    for name in ("abc1", "abc2"):
        (base / name).mkdir()
        (base / name / store.HEADER).write_text(json.dumps({"schema": 1, "created": 1.0}))
    with pytest.raises(UserError, match='ref "abc" is ambiguous'):
        store.resolve(tmp_path, "abc")


def test_bounded_count_and_prune_by_age(tmp_path: Path) -> None:
    clock = Clock()
    for i in range(6):
        rec = BuildRecorder(tmp_path, HistoryOptions(max_records=4, max_age=0), clock=clock)
        rec.start(RequestSummary(name=f"b{i}"))
        clock.tick(100)
        rec.finish()
    # The 6th start trimmed to 4 while it ran; every record left is one of the newest.
    names = [h.request.name for h in store.heads(tmp_path)]
    assert names == ["b5", "b4", "b3", "b2"]
    report = prune_records(tmp_path, until=150, now=clock.t)  # b2, b3 ended 300, 200 ago
    assert report.removed == 2 and report.bytes_freed > 0
    assert [h.request.name for h in store.heads(tmp_path)] == ["b5", "b4"]
    assert prune_records(tmp_path, keep=1).removed == 1
    assert prune_records(tmp_path, everything=True).removed == 1
    assert store.heads(tmp_path) == []


def test_a_running_record_survives_prune(tmp_path: Path) -> None:
    rec = BuildRecorder(tmp_path)
    rec.start(RequestSummary(name="busy"))
    assert prune_records(tmp_path, everything=True).removed == 0
    assert store.heads(tmp_path)[0].status == "running"
    rec.finish()
    assert prune_records(tmp_path, everything=True).removed == 1


def test_recording_never_fails_the_build(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rec = BuildRecorder(blocker)  # its history dir cannot be made
    rec.start(RequestSummary(name="x"))
    rec(VertexStarted(digest=A, name="x"))
    assert rec.finish() is None
    assert rec.problems and "recording stopped" in rec.problems[0]


def test_history_off(tmp_path: Path) -> None:
    rec = BuildRecorder(tmp_path, HistoryOptions.from_environ({"PYBUILD_HISTORY": "0"}))
    rec.start(RequestSummary(name="x"))
    rec(VertexStarted(digest=A, name="x"))
    assert rec.finish() is None
    assert not store.history_root(tmp_path).exists()
    with pytest.raises(UserError, match="PYBUILD_STEP_LOG_MAX_SIZE"):
        HistoryOptions.from_environ({"PYBUILD_STEP_LOG_MAX_SIZE": "2MB"})
    assert HistoryOptions.from_environ({"PYBUILD_STEP_LOG_MAX_SIZE": "-1"}).step_log_limit == -1

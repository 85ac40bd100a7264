"""A RUN step is contained: no host processes, no writes outside its snapshot, nothing
left running; a failing step fails the build with its exit code, line and output; a
killed build leaves nothing behind and the next build cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.integration.conftest import REPO, PybuildRunner, run_pybuild
from tests.integration.test_executor_support import last_layer, processes, write_context


def test_step_cannot_see_host_processes_or_write_to_the_host(
        pybuild: PybuildRunner, shared_root: Path, tmp_path: Path) -> None:
    marker = f"pybuild-escape-{uuid.uuid4().hex[:8]}"
    ctx = write_context(tmp_path / "ctx", f"""\
FROM busybox
RUN ls /proc | grep -c '^[0-9]' > /nprocs; \\
    for p in /proc/1/root /proc/self/root /proc/1/cwd; do \\
      echo x > $p/../../../../../../../tmp/{marker} 2>/dev/null; done; \\
    echo x > /sys/kernel/{marker} 2>/dev/null; echo x > /proc/sys/{marker} 2>/dev/null; \\
    mount -t tmpfs none /mnt 2>/dev/null && echo mounted > /mount-ok; \\
    cat /proc/1/cmdline | tr '\\0' ' ' > /pid1; true
""")
    r = pybuild("build", "-t", "safety:1", str(ctx))
    assert r.code == 0, r.err
    assert not os.path.exists(f"/tmp/{marker}")
    files = last_layer(shared_root, "safety:1", tmp_path)
    assert int(files["nprocs"].data) <= 3  # sh and its children only
    assert files["pid1"].data.startswith(b"/bin/sh")
    # The write through /proc/1/root landed in the step's own rootfs (so in its layer).
    assert f"tmp/{marker}" in files


def test_no_process_survives_a_build(pybuild: PybuildRunner, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    ctx = write_context(tmp_path / "ctx", f"FROM busybox\nRUN (sleep 1{tag[:2]}3 &) ; true\n")
    r = pybuild("build", "--no-cache", str(ctx))
    assert r.code == 0, r.err
    assert not [p for p in processes() if f"sleep 1{tag[:2]}3" in p]
    assert not [p for p in processes() if "pybuild.builder.executor.daemon" in p
                and str(ctx) in p]


def test_failing_step_reports_exit_code_line_and_output(pybuild: PybuildRunner,
                                                        tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nRUN true\n"
                        "RUN echo first line && echo second line >&2 && exit 7\n")
    r = pybuild("build", str(ctx))
    assert r.code != 0
    assert "exit code: 7" in r.err
    assert "Dockerfile:3" in r.err and "RUN echo first line" in r.err
    assert "first line" in r.err and "second line" in r.err
    assert "Traceback" not in r.err


def _start_build(root: Path, ctx: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYBUILD_ROOT", None)
    return subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(root), "build",
                             "--progress", "plain", str(ctx)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)


def _wait_for(pred, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_killed_build_leaves_nothing_and_next_build_cleans(fresh_root: Path,
                                                           tmp_path: Path) -> None:
    for sig, secs in ((signal.SIGTERM, 101), (signal.SIGKILL, 102)):
        ctx = write_context(tmp_path / f"ctx-{secs}", f"FROM busybox\nRUN sleep {secs}\n")
        proc = _start_build(fresh_root, ctx)
        try:
            assert _wait_for(lambda s=secs: any(p == f"sleep {s}" for p in processes())), \
                "the step never started"
            proc.send_signal(sig)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert _wait_for(lambda s=secs: not any(p == f"sleep {s}" for p in processes()), 10)
        assert not any("pybuild.builder.executor.daemon" in p and str(fresh_root) in p
                       for p in processes())
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(fresh_root) not in mounts
    tmp = fresh_root / "sandbox" / "tmp"
    assert any(n.startswith("build-") for n in os.listdir(tmp))  # leftovers of the kills
    ctx = write_context(tmp_path / "ctx-after", "FROM busybox\nRUN echo ok > /ok\n")
    r = run_pybuild(fresh_root, "build", "-t", "after:1", str(ctx))
    assert r.code == 0, r.err
    assert not [n for n in os.listdir(tmp) if n.startswith("build-")]

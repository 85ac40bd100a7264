"""Executor overhead: per-step cost of `RUN true` and throughput of a big RUN layer.

Targets (issue 4): per-step start+teardown+diff of `RUN true` < 40 ms (median); a 1 GB
single-file RUN layer produced (diffed into the store's plain blob, fsync included) at
>= 70 % of the speed of `tar cf - FILE | zstd -T2 > /dev/null` on the same machine, i.e.
the "ratio" printed for the big layer >= 70 %.

Usage: .venv/bin/python bench/executor_overhead.py [--steps 50] [--big-mb 1024]
         [--runtime crun|runc] [--skip-big]
Runs in a fresh pybuild root under /var/tmp (world-traversable, see tests/integration).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pybuild.api import Builder, BuildRequest  # noqa: E402
from pybuild.builder.events import Event, VertexDone, VertexStarted  # noqa: E402
from pybuild.testimages.busybox import build_busybox_layout, import_into_store  # noqa: E402


class StepTimer:
    """Wall time from VertexStarted to VertexDone of every executed step."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.durations: dict[str, float] = {}

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, VertexStarted):
            self.started[ev.digest] = time.perf_counter()
        elif isinstance(ev, VertexDone) and ev.digest in self.started:
            self.durations[ev.name] = time.perf_counter() - self.started[ev.digest]


def _root() -> tuple[Path, Builder]:
    base = Path(tempfile.mkdtemp(prefix="pybuild-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    layout = build_busybox_layout(REPO / "testdata" / "generated" / "busybox")
    builder = Builder(base / "root")
    import_into_store(builder.root.content, builder.root.images, layout,
                      name="busybox:latest")
    return base, builder


def _ctx(base: Path, name: str, dockerfile: str) -> str:
    ctx = base / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return str(ctx)


def bench_steps(steps: int, runtime: str) -> None:
    base, builder = _root()
    try:
        # Warm the sandbox start, runtime probe and base snapshot first.
        warm = _ctx(base, "warm", "FROM busybox\nRUN true # warm\n")
        builder.build(BuildRequest(context=warm, runtime=runtime, max_parallelism=1))
        lines = ["FROM busybox"] + [f"RUN true # {i}" for i in range(steps)]
        ctx = _ctx(base, "steps", "\n".join(lines) + "\n")
        timer = StepTimer()
        t0 = time.perf_counter()
        builder.build(BuildRequest(context=ctx, runtime=runtime, max_parallelism=1),
                      on_event=timer)
        total = time.perf_counter() - t0
        per = sorted(v * 1000 for v in timer.durations.values())
        print(f"runtime={runtime or 'auto'} steps={len(per)} total={total:.2f}s "
              f"per-step median={statistics.median(per):.1f} ms "
              f"p90={per[int(len(per) * 0.9)]:.1f} ms min={per[0]:.1f} ms "
              f"(whole build / steps = {total * 1000 / steps:.1f} ms)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bench_big(mb: int, runtime: str) -> None:
    base, builder = _root()
    try:
        ctx = _ctx(base, "big", "FROM busybox\n"
                   f"RUN dd if=/dev/urandom of=/big bs=1M count={mb} 2>/dev/null\n")
        result = builder.build(BuildRequest(context=ctx, runtime=runtime))
        # The daemon's diff of the step plus storing the blob (fsync included), timed where
        # it happens, not by subtracting the file's creation from the step.
        ours = result.steps[-1].layer_seconds
        gen = base / "gen"
        gen.mkdir()
        subprocess.run(f"dd if=/dev/urandom of={gen}/big bs=1M count={mb} 2>/dev/null",
                       shell=True, check=True)
        subprocess.run(f"cat {gen}/big > /dev/null", shell=True, check=True)  # page cache
        t0 = time.perf_counter()
        subprocess.run(f"tar cf - -C {gen} big | zstd -T2 -3 > /dev/null", shell=True,
                       check=True)
        peer = time.perf_counter() - t0
        # The same pipeline made durable, as a content store must be (pybuild fsyncs).
        subprocess.run("sync", check=True)
        t0 = time.perf_counter()
        subprocess.run(f"tar cf - -C {gen} big | zstd -q -T2 -3 > {gen}/big.zst && sync",
                       shell=True, check=True)
        durable = time.perf_counter() - t0
        print(f"{mb} MB layer: diff + store {ours:.2f}s; tar|zstd -T2 >/dev/null {peer:.2f}s "
              f"(ratio {peer / ours * 100:.0f} %); tar|zstd -T2 >file && sync {durable:.2f}s "
              f"(ratio {durable / ours * 100:.0f} %)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--big-mb", type=int, default=1024)
    p.add_argument("--runtime", default="")
    p.add_argument("--skip-big", action="store_true")
    a = p.parse_args()
    os.environ.setdefault("PYBUILD_NO_PROGRESS", "1")
    bench_steps(a.steps, a.runtime)
    if not a.skip_big:
        bench_big(a.big_mb, a.runtime)


if __name__ == "__main__":
    main()

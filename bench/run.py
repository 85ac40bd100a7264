#!/usr/bin/env python3
"""pybuild's speed benchmarks, on the peers' workloads, as ratios measured in one run.

usage: bench/run.py [--iter N] [--peers] [WORKLOAD...]

Every workload is generated deterministically by ../shared/peers/workloads/*/gen-context.sh
(no network). For each metric the table shows pybuild's median wall time, the physical
limit or target it is compared with in the same run, and the ratio. With --peers, the
peers (BuildKit via dockerd, buildah) are run by ../shared/peers/run-peers.sh with pybuild
hooked in, so every builder is measured in the same run (slow: it starts dockerd).

small-change's target is on pybuild's overhead: each build runs with `--progress rawjson`,
the steps that executed are timed from its events (VertexStarted .. VertexDone, overlaps
counted once), and "overhead" is the wall time minus that step time. A step's own time
includes waiting for the sandbox if the sandbox was not up yet when it started.

The installed bytecode of pybuild is compiled first (an installed CLI has it; without it
every start pays ~45 ms of compiling).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"
WORKLOADS = PEERS / "workloads"
ALL = ["noop-rebuild", "small-change", "many-runs", "big-context", "parallel-stages",
       "big-layer"]
# Targets of issues 4 and 5 (seconds, or ratios where stated).
TARGETS = {
    ("noop-rebuild", "rebuild"): 0.2,
    ("small-change", "1-file overhead"): 0.4,
    ("parallel-stages", "cold"): 2.3,
    ("many-runs", "cold"): 2.0,
    ("big-context", "rebuild"): 0.4,
}
sys.path.insert(0, str(REPO))


class Bench:
    def __init__(self, work: Path, iters: int) -> None:
        self.work = work
        self.iters = iters
        self.rows: list[tuple[str, str, float, str, str]] = []
        self.layout = REPO / "testdata" / "generated" / "busybox" / "oci"

    def fresh_root(self) -> Path:
        from pybuild.root import Root
        from pybuild.testimages.busybox import build_busybox_layout, import_into_store

        root = self.work / f"root-{time.monotonic_ns()}"
        if not self.layout.is_dir():
            build_busybox_layout(self.layout.parent)
        stores = Root(root)
        import_into_store(stores.content, stores.images, self.layout, name="busybox:latest")
        return root

    def pybuild(self, root: Path, ctx: Path, *extra: str) -> float:
        cmd = [str(REPO / ".venv" / "bin" / "pybuild"), "--root", str(root), "build",
               "--build-arg", "BASE=busybox:latest", "-t", "bench:latest", "--progress",
               "quiet", *extra, str(ctx)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"pybuild failed on {ctx}:\n{proc.stderr}")
        return elapsed

    def pybuild_steps(self, root: Path, ctx: Path) -> tuple[float, float]:
        """(wall time, time the executed steps took) of one build with rawjson progress;
        the events are timestamped as they arrive."""
        cmd = [str(REPO / ".venv" / "bin" / "pybuild"), "--root", str(root), "build",
               "--build-arg", "BASE=busybox:latest", "-t", "bench:latest", "--progress",
               "rawjson", str(ctx)]
        started: dict[str, float] = {}
        spans: list[tuple[float, float]] = []
        t0 = time.perf_counter()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                now = time.perf_counter()
                event = json.loads(line)
                if event["type"] == "VertexStarted":
                    started[event["digest"]] = now
                elif event["type"] == "VertexDone":
                    begin = started.pop(event["digest"], now - float(event["seconds"]))
                    spans.append((begin, now))
            err = proc.stderr.read()
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"pybuild failed on {ctx}:\n{err}")
        return elapsed, _union(spans)

    def context(self, name: str) -> Path:
        ctx = self.work / "ctx" / name
        if not ctx.is_dir():
            ctx.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["bash", str(WORKLOADS / name / "gen-context.sh"), str(ctx)],
                           check=True, capture_output=True)
        return ctx

    def add(self, workload: str, metric: str, samples: list[float], ref: float | None,
            ref_name: str) -> None:
        med = statistics.median(samples)
        ratio = f"{med / ref:.2f}x" if ref else "-"
        self.rows.append((workload, metric, med, ratio, ref_name))

    def limit(self, shell: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", shell], check=True, capture_output=True)
        return time.perf_counter() - t0

    # -- workloads -----------------------------------------------------------------------

    def noop_rebuild(self) -> None:
        ctx, root = self.context("noop-rebuild"), self.fresh_root()
        self.add("noop-rebuild", "cold", [self.pybuild(root, ctx)], None, "")
        samples = [self.pybuild(root, ctx) for _ in range(self.iters)]
        self._target("noop-rebuild", "rebuild", samples)

    def small_change(self) -> None:
        ctx, root = self.context("small-change"), self.fresh_root()
        self.pybuild(root, ctx)
        walls, steps = [], []
        for i in range(self.iters):
            subprocess.run(["bash", str(WORKLOADS / "small-change" / "mutate.sh"), str(ctx),
                            f"{time.time_ns()}-{i}"], check=True)
            wall, step = self.pybuild_steps(root, ctx)
            walls.append(wall)
            steps.append(step)
        self.add("small-change", "1-file wall", walls, None, "")
        self.add("small-change", "1-file steps", steps, None, "executed steps")
        self._target("small-change", "1-file overhead",
                     [w - s for w, s in zip(walls, steps, strict=True)])

    def many_runs(self) -> None:
        ctx = self.context("many-runs")
        samples = [self.pybuild(self.fresh_root(), ctx) for _ in range(self.iters)]
        self._target("many-runs", "cold", samples)

    def parallel_stages(self) -> None:
        ctx = self.context("parallel-stages")
        samples = [self.pybuild(self.fresh_root(), ctx) for _ in range(self.iters)]
        self._target("parallel-stages", "cold", samples)

    def big_context(self) -> None:
        ctx = self.context("big-context")
        limit = self.limit(f"tar cf - -C {ctx} . | sha256sum")
        root = self.fresh_root()
        cold = self.pybuild(root, ctx)
        self.add("big-context", "cold", [cold], limit, "tar | sha256sum")
        samples = [self.pybuild(root, ctx) for _ in range(self.iters)]
        self._target("big-context", "rebuild", samples)

    def big_layer(self) -> None:
        ctx = self.context("big-layer")
        root = self.fresh_root()
        cold = self.pybuild(root, ctx)
        self.add("big-layer", "cold build", [cold], None, "")
        probe = self.work / "big.bin"
        subprocess.run(["bash", "-c", f"i=0; while [ $i -lt 512 ]; do head -c 1048576 "
                        f"/dev/urandom; head -c 1048576 /dev/zero; i=$((i+1)); done > {probe}"],
                       check=True)
        limit = self.limit(f"tar cf - -C {self.work} big.bin | zstd -T2 -3 > /dev/null")
        t0 = time.perf_counter()
        out = self.work / "big.tar"
        subprocess.run([str(REPO / ".venv" / "bin" / "pybuild"), "--root", str(root),
                        "export", "bench:latest", "-o",
                        f"type=oci,dest={out},compression=zstd"], check=True,
                       capture_output=True)
        self.add("big-layer", "OCI export (zstd)", [time.perf_counter() - t0], None, "")
        self.add("big-layer", "tar|zstd -T2 (1 GiB)", [limit], None, "physical limit")
        probe.unlink()

    def _target(self, workload: str, metric: str, samples: list[float]) -> None:
        target = TARGETS.get((workload, metric))
        self.add(workload, metric, samples, target, f"target {target}s" if target else "")

    def table(self) -> str:
        lines = [f"{'workload':<16} {'metric':<22} {'pybuild s':>9}  {'ratio':>7}  vs"]
        for w, m, med, ratio, ref in self.rows:
            lines.append(f"{w:<16} {m:<22} {med:>9.3f}  {ratio:>7}  {ref}")
        return "\n".join(lines)


def _union(spans: list[tuple[float, float]]) -> float:
    """Total length of the time intervals, overlaps counted once."""
    total, end = 0.0, float("-inf")
    for begin, finish in sorted(spans):
        if finish <= end:
            continue
        total += finish - max(begin, end)
        end = finish
    return total


def compile_bytecode() -> None:
    """What an installed CLI has: bytecode for every module (see the module docstring)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "pybuild")],
                   check=True)


def run_peers(workloads: list[str]) -> None:
    """Hook pybuild into the peers' runner so all builders are timed in one run."""
    root = Path(tempfile.mkdtemp(prefix="pybuild-peers-", dir="/var/tmp"))
    exe = REPO / ".venv" / "bin" / "pybuild"
    env = dict(os.environ)
    env["PYBUILD"] = (f"{exe} --root {root} build --progress plain -t {{tag}} "
                      f"-f {{dockerfile}} --build-arg BASE=busybox:latest {{context}}")
    env["PYBUILD_RESET"] = (f"rm -rf {root} && {sys.executable} {REPO}/testdata/make_base.py "
                            f"--out {REPO}/testdata/generated/busybox --store-root {root}")
    env["PYBUILD_EXPORT"] = f"{exe} --root {root} export {{tag}} -o type=oci,dest={{dest}}"
    env["PYBUILD_CONFIG"] = f"{exe} --root {root} inspect {{tag}}"
    env["PYBUILD_PREPARE"] = env["PYBUILD_RESET"]
    subprocess.run(["bash", str(PEERS / "run-peers.sh"), *workloads], env=env, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", default=ALL)
    ap.add_argument("--iter", type=int, default=3)
    ap.add_argument("--peers", action="store_true",
                    help="also time BuildKit and buildah on the same workloads")
    ap.add_argument("--json", help="write the rows as JSON to this file")
    args = ap.parse_args()
    if not WORKLOADS.is_dir():
        raise SystemExit(f"workloads not found at {WORKLOADS}")
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-", dir="/var/tmp"))
    work.chmod(0o755)
    bench = Bench(work, args.iter)
    try:
        for name in args.workloads:
            getattr(bench, name.replace("-", "_"))()
            print(bench.table().splitlines()[-1], flush=True)
    finally:
        print()
        print(bench.table())
        if args.json:
            Path(args.json).write_text(json.dumps(bench.rows, indent=1))
        shutil.rmtree(work, ignore_errors=True)
    if args.peers:
        run_peers(args.workloads)


if __name__ == "__main__":
    main()

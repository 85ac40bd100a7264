#!/usr/bin/env python3
"""`pybuild build --load` against `podman build` of the same Dockerfile, in one run.

The image is busybox plus a RUN step writing SIZE MiB of random data (the issue's case
was a 329 MB image). pybuild builds into its store and streams an uncompressed docker
archive into `podman load`; podman builds into its own storage. Both cold (--no-cache,
nothing in podman) and with every step cached (podman keeps its cache; pybuild still
hands the whole image over). Prints each
median and the ratio pybuild/podman (below 1: pybuild's hand-off is faster).

usage: .venv/bin/python bench/load_handoff.py [--size-mb 300] [--iter 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--events-backend=file"]
TAG = "localhost/pybuild-bench/handoff:1"


def _run(cmd: list[str], **kw: object) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--iter", type=int, default=3)
    opts = parser.parse_args()
    if shutil.which("podman") is None:
        print("podman is not installed", file=sys.stderr)
        return 1
    podman = [*PODMAN, *(["--runtime", "runc"] if shutil.which("runc") else [])]
    from pybuild.root import Root
    from pybuild.testimages.busybox import build_busybox_layout, import_into_store

    def podman_ids() -> set[str]:
        """podman's untagged images (its build's intermediates are)."""
        out = subprocess.run([*podman, "images", "-q", "--no-trunc", "--filter",
                              "dangling=true"], capture_output=True, text=True,
                             check=False).stdout
        return set(out.split())

    before = podman_ids()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-load-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        layout = build_busybox_layout(REPO / "testdata" / "generated" / "busybox")
        root = work / "root"
        stores = Root(root)
        import_into_store(stores.content, stores.images, layout, name="busybox:latest")
        pybuild = [sys.executable, "-m", "pybuild", "--root", str(root)]
        # podman needs the same base: pybuild's own docker archive of it, loaded.
        archive = work / "busybox.tar"
        subprocess.run([*pybuild, "save", "-o", str(archive), "busybox"], check=True,
                       cwd=REPO)
        subprocess.run([*podman, "load", "-i", str(archive)], check=True,
                       capture_output=True)
        if subprocess.run([*podman, "image", "exists", "docker.io/library/busybox:latest"],
                          check=False).returncode != 0:
            subprocess.run([*podman, "tag", "localhost/busybox:latest",
                            "docker.io/library/busybox:latest"], check=True)
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            "FROM busybox\n"
            f"RUN head -c {opts.size_mb << 20} /dev/urandom > /payload\n"
            "RUN echo done > /done\n")
        podman_build = [*podman, "build", "--pull=never", "--network=none", "-t", TAG,
                        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000",
                        str(ctx)]
        ours = [*pybuild, "build", "--network=none", "--load=podman", "-t", TAG, str(ctx)]
        rows = []
        # cold: nothing cached, nothing in podman; cached: both rebuild an unchanged
        # Dockerfile (podman keeps its cache; pybuild still streams the whole image)
        for label, extra in (("cold (--no-cache)", ["--no-cache"]), ("cached", [])):
            times: dict[str, list[float]] = {"pybuild": [], "podman": []}
            for _ in range(opts.iter):
                if extra:
                    subprocess.run([*podman, "rmi", "--force", TAG], capture_output=True)
                times["pybuild"].append(_run([*ours[:-1], *extra, ours[-1]], cwd=REPO))
                if extra:
                    subprocess.run([*podman, "rmi", "--force", TAG], capture_output=True)
                pod = [*podman_build[:-1], *extra, podman_build[-1]]
                times["podman"].append(_run(pod))
            ours_s = statistics.median(times["pybuild"])
            theirs = statistics.median(times["podman"])
            rows.append((label, ours_s, theirs, ours_s / theirs))
        print(f"image: busybox + {opts.size_mb} MiB RUN layer; {opts.iter} runs each, "
              "medians")
        print(f"{'':20} {'pybuild build --load':>22} {'podman build':>14} {'ratio':>7}")
        for label, a, b, ratio in rows:
            print(f"{label:20} {a:21.2f}s {b:13.2f}s {ratio:7.2f}")
    finally:
        subprocess.run([*podman, "rmi", "--force", TAG, "localhost/busybox:latest",
                        "docker.io/library/busybox:latest"], capture_output=True)
        made = podman_ids() - before  # the intermediates podman built in this run
        if made:
            subprocess.run([*podman, "rmi", "--force", *made], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

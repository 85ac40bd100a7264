"""Layer apply throughput: a 20k-small-file layer and a 1 GiB layer, unpacked with apply_layer.

Compares two pybuild trees back to back on the same tars (e.g. a checkout of main and
this branch), so the confined-path work of issue 9 (F1) can be priced:

    .venv/bin/python bench/layer_apply.py --tree /path/to/main-checkout --tree .

Each tree runs in its own subprocess (PYTHONPATH=tree), rounds interleaved; the median
wall and CPU (user + system) time per layer and tree are printed with their ratios
against the first tree; on a shared machine the CPU time is the steadier number. The tars
(uncompressed, as the local store keeps layers) are made once under /var/tmp and removed
at the end unless --keep.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

_CHILD = r"""
import io, json, os, shutil, sys, tempfile, time
from pybuild.layers.apply import apply_layer
tar, overlay, scratch = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
dest = tempfile.mkdtemp(dir=scratch)
with open(tar, "rb") as f:
    t0, c0 = time.perf_counter(), time.process_time()
    apply_layer(io.BufferedReader(f, 1 << 20), dest, overlay_format=overlay)
    took = [time.perf_counter() - t0, time.process_time() - c0]
shutil.rmtree(dest)
print(json.dumps(took))
"""


def small_files_layer(path: Path, files: int) -> None:
    """`files` files of 100 B - 4 KiB in a tree like a base image's (dirs of ~40 entries,
    depth 2-5), with some symlinks and hard links."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        made = 0
        d = 0
        while made < files:
            parts = ["usr", f"lib{d % 7}", f"pkg{d}"] + [f"sub{i}" for i in range(d % 3)]
            for depth in range(1, len(parts) + 1):
                info = tarfile.TarInfo("/".join(parts[:depth]))
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                t.addfile(info)
            for i in range(40):
                name = "/".join([*parts, f"file{i}.py"])
                data = os.urandom(100 + (i * 97) % 4000)
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                t.addfile(info, io.BytesIO(data))
                made += 1
            link = tarfile.TarInfo("/".join([*parts, "link"]))
            link.type, link.linkname = tarfile.SYMTYPE, "file0.py"
            t.addfile(link)
            hard = tarfile.TarInfo("/".join([*parts, "hard"]))
            hard.type, hard.linkname = tarfile.LNKTYPE, "/".join([*parts, "file1.py"])
            t.addfile(hard)
            d += 1


def big_layer(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        per_file = max(mib // 4, 1)
        for n in range(4):
            info = tarfile.TarInfo(f"opt/big{n}.bin")
            info.size, info.mode = per_file << 20, 0o644

            class Reader(io.RawIOBase):
                left = per_file << 20

                def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
                    n = min(len(b), self.left, len(chunk))
                    b[:n] = chunk[:n]
                    self.left -= n
                    return n

                def readable(self) -> bool:
                    return True

            t.addfile(info, io.BufferedReader(Reader()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True, help="a pybuild checkout")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--scratch", default="/var/tmp",
                    help="where tars and trees go (e.g. /dev/shm to leave the disk out)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-apply-", dir=args.scratch))
    try:
        layers = {"20k small files": work / "small.tar", f"{args.big_mib} MiB": work / "big.tar"}
        small_files_layer(layers["20k small files"], args.files)
        big_layer(layers[f"{args.big_mib} MiB"], args.big_mib)
        times: dict[tuple[str, str, bool], list[list[float]]] = {}
        for _ in range(args.rounds):
            for label, tar in layers.items():
                for overlay in (True, False):
                    for tree in args.tree:
                        env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
                        out = subprocess.run(
                            [sys.executable, "-c", _CHILD, str(tar), "1" if overlay else "0",
                             str(work)], env=env, check=True, capture_output=True, text=True)
                        times.setdefault((label, tree, overlay), []).append(json.loads(out.stdout))
        first = args.tree[0]
        for label in layers:
            for overlay in (True, False):
                base = times[(label, first, overlay)]
                wall0 = statistics.median(w for w, _ in base)
                cpu0 = statistics.median(c for _, c in base)
                for tree in args.tree:
                    runs = times[(label, tree, overlay)]
                    wall = statistics.median(w for w, _ in runs)
                    cpu = statistics.median(c for _, c in runs)
                    mode = "overlay" if overlay else "flatten"
                    print(f"{label:>16} {mode}  {tree:<32} wall {wall * 1000:8.1f} ms "
                          f"({wall / wall0:4.2f})  cpu {cpu * 1000:8.1f} ms ({cpu / cpu0:4.2f})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

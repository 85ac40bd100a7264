#!/usr/bin/env python3
"""What the native SBOM scan costs: on the Debian 12 test image and on a 20k-file tree.

usage: bench/attest_scan.py [--iter N] [--cold-build SECONDS] [--json]

Measured (median of N runs, after one warm-up):
- debian/layers: `scan(image_view(...))` of the Debian image (minbase + apt, pip and npm
  layers, gzip-compressed as a pushed image's are) straight from its blobs;
- debian/dir: `scan(DirectoryView(...))` of the same image unpacked (root only: the base
  has device nodes);
- big-context/dir and big-context/layer: the 20,000-file tree of the peers' big-context
  workload (../shared/peers/workloads/big-context), as a directory and as one layer.
- spdx: writing the Debian image's SPDX document.

`--cold-build S` prints each scan as a fraction of a cold build that took S seconds
(target: under 10 %). The fixture and the workload are made once (cached / in /var/tmp,
removed at the end).
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pybuild.attest.sbom.fsview import DirectoryView, Layer, LayerStackView  # noqa: E402
from pybuild.attest.sbom.image import image_view  # noqa: E402
from pybuild.attest.sbom.scan import scan  # noqa: E402
from pybuild.attest.sbom.spdx import Subject, encode, spdx_document  # noqa: E402
from pybuild.content.store import ContentStore  # noqa: E402
from pybuild.layers.apply import apply_layer_file  # noqa: E402
from pybuild.layers.compress import CompressingWriter  # noqa: E402
from pybuild.layers.diff import write_tree  # noqa: E402
from pybuild.oci import mediatypes as mt  # noqa: E402
from pybuild.oci.config import ImageConfig  # noqa: E402
from pybuild.oci.descriptor import Descriptor, Manifest  # noqa: E402
from testdata.make_debian import build_debian_fixture  # noqa: E402

WORKLOAD = REPO.parent / "shared" / "peers" / "workloads" / "big-context" / "gen-context.sh"


def _median(fn: Callable[[], object], iters: int) -> float:
    fn()  # warm the page cache and the imports
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _gzip_image(store: ContentStore, tars: list[Path]) -> Descriptor:
    layers = []
    for path in tars:
        with store.writer() as w:
            sink = CompressingWriter(w, "gzip")  # type: ignore[arg-type]
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    sink.write(chunk)
            result = sink.result()
            digest = w.commit()
        layers.append((Descriptor(media_type=mt.OCI_LAYER_GZIP, digest=digest,
                                  size=store.size(digest)), result.diff_id))
    config = ImageConfig(architecture="amd64", os="linux",
                         diff_ids=tuple(d for _, d in layers)).encode()
    manifest = Manifest(media_type=mt.OCI_MANIFEST, config=Descriptor(
        media_type=mt.OCI_CONFIG, digest=store.write(config), size=len(config)),
        layers=tuple(d for d, _ in layers)).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(manifest),
                      size=len(manifest))


def measure(iters: int = 5) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-attest-", dir="/var/tmp"))
    try:
        start = time.perf_counter()
        fixture = build_debian_fixture()
        results["debian/fixture"] = {"seconds": time.perf_counter() - start}
        store = ContentStore(work / "content")
        manifest = _gzip_image(store, list(fixture.layers))
        inventory = scan(image_view(store, manifest))
        results["debian/layers"] = {
            "seconds": _median(lambda: scan(image_view(store, manifest)), iters),
            "packages": len(inventory.packages),
        }
        results["spdx"] = {"seconds": _median(lambda: encode(spdx_document(
            inventory, subject=Subject(name="debian", digest=manifest.digest),
            created=0)), iters)}
        if os.geteuid() == 0:
            rootfs = work / "rootfs"
            rootfs.mkdir()
            for layer in fixture.layers:
                apply_layer_file(str(layer), str(rootfs))
            files = sum(len(f) + len(d) for _, d, f in os.walk(rootfs))
            results["debian/dir"] = {
                "seconds": _median(lambda: scan(DirectoryView(rootfs)), iters),
                "entries": files,
            }
        if WORKLOAD.exists():
            ctx = work / "big-context"
            subprocess.run(["bash", str(WORKLOAD), str(ctx)], check=True,
                           capture_output=True)
            entries = sum(len(f) + len(d) for _, d, f in os.walk(ctx))
            results["big-context/dir"] = {
                "seconds": _median(lambda: scan(DirectoryView(ctx)), iters),
                "entries": entries,
            }
            tar = work / "big-context.tar"
            with open(tar, "wb") as f:
                write_tree(str(ctx), f)
            view = LayerStackView([Layer(open=lambda: open(tar, "rb"))])  # noqa: SIM115
            results["big-context/layer"] = {
                "seconds": _median(lambda: scan(view), iters), "entries": entries,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iter", type=int, default=5)
    parser.add_argument("--cold-build", type=float, default=None,
                        help="seconds of a cold build, to print each scan as a fraction")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.iter)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'metric':20} {'median s':>9}  {'of cold build':>13}  detail")
    for name, row in results.items():
        share = (f"{100 * row['seconds'] / args.cold_build:12.1f}%"
                 if args.cold_build and name != "debian/fixture" else f"{'':>13}")
        detail = ", ".join(f"{k}={int(v)}" for k, v in row.items() if k != "seconds")
        print(f"{name:20} {row['seconds']:9.3f}  {share}  {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

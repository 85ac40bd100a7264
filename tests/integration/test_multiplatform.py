"""`--platform linux/amd64,linux/arm64`: one index, each image built for its platform
(arm64 RUN steps through the host's qemu binfmt entry)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.conftest import run_pybuild, tool
from tests.tooling import require


def test_multi_platform_build_gives_an_index(fresh_root: Path, tmp_path: Path) -> None:
    require("qemu-aarch64")
    skopeo = tool("skopeo")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch\n")
    r = run_pybuild(fresh_root, "build", "--platform", "linux/amd64,linux/arm64",
                    "-t", "multi:1", str(ctx))
    assert r.code == 0, r.err
    layout = tmp_path / "layout"
    e = run_pybuild(fresh_root, "export", "multi:1", "-o", f"type=oci,dest={layout},tar=false")
    assert e.code == 0, e.err
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci:{layout}:1"],
                                    check=True, capture_output=True, text=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    archs = sorted(m["platform"]["architecture"] for m in raw["manifests"])
    assert archs == ["amd64", "arm64"]
    for platform, machine, arch in (("linux/amd64", "x86_64", "amd64"),
                                    ("linux/arm64", "aarch64", "arm64")):
        out = tmp_path / f"fs-{arch}"
        x = run_pybuild(fresh_root, "export", "multi:1", "--platform", platform,
                        "-o", f"type=local,dest={out}")
        assert x.code == 0, x.err
        assert (out / "arch").read_text().strip() == machine
        assert (out / "targetarch").read_text().strip() == arch
        cfg = json.loads(subprocess.run(
            [skopeo, "inspect", "--config", "--override-arch", arch, f"oci:{layout}:1"],
            check=True, capture_output=True, text=True).stdout)
        assert cfg["architecture"] == arch

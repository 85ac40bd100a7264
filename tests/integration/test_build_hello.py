"""examples/hello end to end: built into the store, exported, and read back by other tools."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, PybuildRunner, copy_example, run_pybuild, tool

EXPECTED_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "GREETING=hello from pybuild",
]


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory, shared_root: Path) -> dict[str, object]:
    ctx = copy_example("hello", tmp_path_factory.mktemp("ctx") / "hello")
    r = run_pybuild(shared_root, "build", "-t", "hello:1", "--progress", "plain", str(ctx))
    assert r.code == 0, r.err
    info = run_pybuild(shared_root, "inspect", "hello:1")
    assert info.code == 0, info.err
    return {"ctx": ctx, "inspect": json.loads(info.out), "build_log": r.err}


def test_config_matches_the_dockerfile(hello: dict[str, object]) -> None:
    config = hello["inspect"]["config"]  # type: ignore[index]
    c = config["config"]
    assert c["Env"] == EXPECTED_ENV
    assert c["WorkingDir"] == "/app"
    assert c["User"] == "nobody"
    assert c["ExposedPorts"] == {"8080/tcp": {}}
    assert c["Labels"] == {"org.opencontainers.image.title": "hello",
                           "org.opencontainers.image.description": "pybuild demo"}
    assert c["Entrypoint"] == ["/app/run.sh"]
    assert c["Cmd"] == ["world"]
    created_by = [h["created_by"] for h in config["history"]]
    assert created_by[1:] == [
        "WORKDIR /app",
        "COPY greeting.txt run.sh ./ # buildkit",
        'RUN /bin/sh -c chmod 0755 run.sh && echo "built by pybuild" > built.txt && ls -l /app'
        " # buildkit",
        'ENV GREETING=hello from pybuild',
        "LABEL org.opencontainers.image.title=hello "
        "org.opencontainers.image.description=pybuild demo",
        "EXPOSE [8080/tcp]",
        "USER nobody",
        'ENTRYPOINT ["/app/run.sh"]',
        'CMD ["world"]',
    ]
    layered = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(layered) == len(config["rootfs"]["diff_ids"]) == 4


def test_run_output_is_streamed(hello: dict[str, object]) -> None:
    assert "greeting.txt" in str(hello["build_log"])  # the `ls -l /app` of the RUN step


def test_own_validator_accepts_the_image(shared_root: Path, hello: dict[str, object]) -> None:
    from pybuild.oci.validate import validate_image
    from pybuild.root import Root

    stores = Root(shared_root)
    desc = stores.images.get("hello:1").descriptor
    assert validate_image(stores.content, desc) == [str(desc.digest)]


def test_rebuild_gives_the_same_digest(pybuild: PybuildRunner, hello: dict[str, object]) -> None:
    r = pybuild("build", "-t", "hello:again", "--progress", "plain", str(hello["ctx"]))
    assert r.code == 0, r.err
    assert r.err.count("CACHED") >= 4
    again = json.loads(pybuild("inspect", "hello:again").out)
    assert again["manifest_digest"] == hello["inspect"]["manifest_digest"]  # type: ignore[index]


def test_oci_archive_read_by_skopeo(pybuild: PybuildRunner, hello: dict[str, object],
                                    tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    out = tmp_path / "hello.tar"
    r = pybuild("export", "hello:1", "-o", f"type=oci,dest={out}")
    assert r.code == 0, r.err
    cfg = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{out}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert cfg["config"]["Env"] == EXPECTED_ENV
    assert cfg["config"]["User"] == "nobody"
    assert cfg["config"]["Entrypoint"] == ["/app/run.sh"]
    assert cfg["config"]["Cmd"] == ["world"]
    assert cfg["config"]["ExposedPorts"] == {"8080/tcp": {}}
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci-archive:{out}"],
                                    check=True, capture_output=True, text=True).stdout)
    manifest = hello["inspect"]["manifest"]  # type: ignore[index]
    assert raw["config"]["digest"] == manifest["config"]["digest"]
    # The store keeps layers uncompressed (their digests are the diff_ids); exports are gzip.
    diff_ids = hello["inspect"]["config"]["rootfs"]["diff_ids"]  # type: ignore[index]
    new_layers = manifest["layers"][1:]
    assert all(x["mediaType"] == "application/vnd.oci.image.layer.v1.tar" for x in new_layers)
    assert [x["digest"] for x in new_layers] == diff_ids[1:]
    assert all(x["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
               for x in raw["layers"])
    assert len(raw["layers"]) == len(diff_ids) == 4


def test_oci_directory_unpacked_by_umoci(pybuild: PybuildRunner, hello: dict[str, object],
                                         tmp_path: Path) -> None:
    umoci = tool("umoci")
    layout = tmp_path / "layout"
    r = pybuild("export", "hello:1", "-o", f"type=oci,dest={layout},tar=false")
    assert r.code == 0, r.err
    assert (layout / "oci-layout").is_file() and (layout / "index.json").is_file()
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:1", str(bundle)], check=True,
                   capture_output=True)
    rootfs = bundle / "rootfs"
    assert (rootfs / "app" / "greeting.txt").read_text() == "Hello"
    assert (rootfs / "app" / "built.txt").read_text() == "built by pybuild\n"
    run_sh = rootfs / "app" / "run.sh"
    assert stat.S_IMODE(run_sh.stat().st_mode) == 0o755  # chmod in RUN took effect
    assert (rootfs / "app" / "greeting.txt").stat().st_uid == 0  # context files are 0:0
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"


def test_docker_archive_loaded_and_run_by_podman(pybuild: PybuildRunner,
                                                 hello: dict[str, object],
                                                 tmp_path: Path) -> None:
    podman = tool("podman")
    out = tmp_path / "hello-docker.tar"
    r = pybuild("export", "hello:1", "-o", f"type=docker,dest={out}")
    assert r.code == 0, r.err
    skopeo = tool("skopeo")
    cfg = json.loads(subprocess.run([skopeo, "inspect", "--config", f"docker-archive:{out}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert cfg["config"]["WorkingDir"] == "/app"
    # crun refuses hybrid-cgroup hosts such as CI's; podman runs the image with runc.
    common = [podman, "--cgroup-manager=cgroupfs", "--events-backend=file",
              "--runtime", tool("runc")]
    load = subprocess.run([*common, "load", "-i", str(out)], capture_output=True, text=True)
    assert load.returncode == 0, load.stderr
    try:
        run = subprocess.run([*common, "run", "--rm", "--network", "none",
                              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000",
                              "docker.io/library/hello:1"], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "Hello, world! (hello from pybuild)"
    finally:
        subprocess.run([*common, "rmi", "-f", "docker.io/library/hello:1"],
                       capture_output=True)


def test_build_output_flag_writes_an_oci_archive(pybuild: PybuildRunner,
                                                 hello: dict[str, object],
                                                 tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    out = tmp_path / "from-build.tar"
    r = pybuild("build", "-o", f"type=oci,dest={out}", str(hello["ctx"]))
    assert r.code == 0, r.err
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci-archive:{out}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert len(raw["layers"]) == 4


def test_tag_and_rmi(pybuild: PybuildRunner, hello: dict[str, object]) -> None:
    assert pybuild("tag", "hello:1", "hello:tagged").code == 0
    names = ("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "hello:tagged" in pybuild(*names).out.split()
    assert pybuild("rmi", "hello:tagged").code == 0
    assert "hello:tagged" not in pybuild(*names).out.split()
    gone = pybuild("inspect", "hello:tagged")
    assert gone.code == 1 and "not in the local image store" in gone.err


def test_cli_help_is_useful() -> None:
    r = run_pybuild(REPO / ".unused-root", "--help")
    assert r.code == 0
    for word in ("build", "images", "inspect", "export", "tag", "rmi"):
        assert word in r.out
    b = run_pybuild(REPO / ".unused-root", "build", "--help")
    assert "--build-arg" in b.out and "--output" in b.out

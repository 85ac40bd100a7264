"""`pybuild imagetools inspect` and `create`: a multi-platform index assembled from
per-platform images pushed by digest (the native-runner CI pattern), read back by skopeo and
pulled platform by platform by podman; push --platform and --compression; schema 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index
from pybuild.oci.reference import Reference
from pybuild.registry import RegistryOptions, push_sync
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.conftest import run_pybuild
from tests.registry_fixture import (  # noqa: F401  (pytest fixtures)
    RunningRegistry,
    registry,
    run_registry,
)
from tests.tooling import require_tool

NO_AUTH = {"REGISTRY_AUTH_FILE": "/nonexistent/auth.json"}


@pytest.fixture(scope="module")
def by_digest(base_layout: Path, registry: RunningRegistry,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Descriptor]:
    """busybox's amd64 and arm64 images pushed by digest only (no tag), one repository for
    both (it/app) and one each (it/amd64, it/arm64)."""
    from pybuild.transports.oci_layout import read_oci_layout

    store = ContentStore(tmp_path_factory.mktemp("it") / "content")
    top = read_oci_layout(base_layout, store, None)
    children = {d.platform.architecture: d for d in Index.parse(store.read(top.digest)).manifests
                if d.platform is not None}
    opts = RegistryOptions(auth_files=())
    for arch, child in children.items():
        plain = Descriptor(media_type=child.media_type, digest=child.digest, size=child.size)
        for repo in ("it/app", f"it/{arch}"):
            push_sync(store, plain, Reference(domain=registry.host, path=repo,
                                              digest=child.digest), options=opts)
    return children


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(registry.host) as p:
        yield p


def skopeo_raw(ref: str) -> dict[str, object]:
    proc = subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                           f"docker://{ref}"], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)
    assert isinstance(value, dict)
    return value


def platforms_of(index: dict[str, object]) -> dict[str, str]:
    manifests = index["manifests"]
    assert isinstance(manifests, list)
    return {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
            for m in manifests}


def podman_pull_each(ref: str, platforms: list[str]) -> dict[str, str]:
    """podman (containers/image) pulls every platform of the index; their architectures."""
    podman = require_tool("podman")
    scratch = Path(tempfile.mkdtemp(prefix="pbpod-"))  # podman wants a short runroot
    base = [podman, "--root", str(scratch / "storage"), "--runroot", str(scratch / "run"),
            "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager",
            "cgroupfs"]
    env = dict(os.environ, XDG_RUNTIME_DIR=str(scratch / "xdg"), HOME=str(scratch))
    (scratch / "xdg").mkdir(parents=True, exist_ok=True)
    seen = {}
    try:
        for platform in platforms:
            pull = subprocess.run([*base, "pull", "--tls-verify=false", "--platform", platform,
                                   ref], capture_output=True, text=True, env=env, timeout=180,
                                  check=False)
            assert pull.returncode == 0, pull.stderr
            image_id = pull.stdout.strip().splitlines()[-1]
            arch = subprocess.run([*base, "image", "inspect", "--format",
                                   "{{.Os}}/{{.Architecture}}", image_id], capture_output=True,
                                  text=True, env=env, timeout=60, check=True).stdout.strip()
            seen[platform] = arch
    finally:
        subprocess.run([*base, "system", "reset", "--force"], capture_output=True, env=env,
                       timeout=120, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    return seen


def test_create_an_index_from_images_pushed_by_digest(
        shared_root: Path, tmp_path: Path, registry: RunningRegistry,  # noqa: F811
        by_digest: dict[str, Descriptor]) -> None:
    sources = [registry.ref(f"it/app@{by_digest[a].digest}") for a in ("amd64", "arm64")]
    target = registry.ref("it/app:multi")
    dry = run_pybuild(shared_root, "imagetools", "create", "--dry-run", "-t", target,
                      *sources, env=NO_AUTH)
    assert dry.code == 0, dry.err
    planned = json.loads(dry.out)
    # the platforms come from the images' configs: the sources named only digests
    assert platforms_of(planned) == {"linux/amd64": by_digest["amd64"].digest,
                                     "linux/arm64": by_digest["arm64"].digest}
    missing = subprocess.run([require_tool("skopeo"), "inspect", "--raw",
                              "--tls-verify=false", f"docker://{target}"],
                             capture_output=True, timeout=60, check=False)
    assert missing.returncode != 0  # a dry run pushes nothing
    r = run_pybuild(shared_root, "imagetools", "create", "-t", target, *sources,
                    "--annotation", "index:org.opencontainers.image.description=two arches",
                    "--annotation", "manifest-descriptor[linux/arm64]:com.example.runner=arm",
                    env=NO_AUTH)
    assert r.code == 0, r.err
    index = skopeo_raw(target)
    assert index["mediaType"] == mt.OCI_INDEX
    assert index["annotations"] == {"org.opencontainers.image.description": "two arches"}
    arm = next(m for m in index["manifests"]  # type: ignore[attr-defined]
               if m["platform"]["architecture"] == "arm64")
    assert arm["annotations"] == {"com.example.runner": "arm"}
    seen = podman_pull_each(target, ["linux/amd64", "linux/arm64"])
    assert seen == {"linux/amd64": "linux/amd64", "linux/arm64": "linux/arm64"}


def test_create_from_other_repositories_mounts_and_append_adds(
        shared_root: Path, proxy: FaultProxy, registry: RunningRegistry,  # noqa: F811
        by_digest: dict[str, Descriptor]) -> None:
    amd = proxy.ref(f"it/amd64@{by_digest['amd64'].digest}")
    arm = proxy.ref(f"it/arm64@{by_digest['arm64'].digest}")
    target = proxy.ref("it/combined:1")
    first = run_pybuild(shared_root, "imagetools", "create", "-t", target, amd, env=NO_AUTH)
    assert first.code == 0, first.err
    assert list(platforms_of(skopeo_raw(registry.ref("it/combined:1")))) == ["linux/amd64"]
    second = run_pybuild(shared_root, "imagetools", "create", "--append", "-t", target, arm,
                         env=NO_AUTH)
    assert second.code == 0, second.err
    index = skopeo_raw(registry.ref("it/combined:1"))
    assert set(platforms_of(index)) == {"linux/amd64", "linux/arm64"}
    # every blob came over by a cross-repository mount: no data was uploaded
    assert not [h for h in proxy.log if h.method in ("PATCH", "PUT")
                and "/blobs/uploads/" in h.path]
    assert [h for h in proxy.log if h.method == "POST" and "mount=" in h.path]


def test_imagetools_inspect_text_raw_and_json(
        shared_root: Path, registry: RunningRegistry,  # noqa: F811
        by_digest: dict[str, Descriptor]) -> None:
    target = registry.ref("it/inspect:1")
    sources = [registry.ref(f"it/app@{by_digest[a].digest}") for a in ("amd64", "arm64")]
    assert run_pybuild(shared_root, "imagetools", "create", "-t", target, *sources,
                       env=NO_AUTH).code == 0
    text = run_pybuild(shared_root, "imagetools", "inspect", target, env=NO_AUTH)
    assert text.code == 0, text.err
    assert f"Name:      {target}" in text.out and "MediaType: " + mt.OCI_INDEX in text.out
    assert "Manifests:" in text.out and "  Platform:  linux/arm64" in text.out
    raw = run_pybuild(shared_root, "imagetools", "inspect", "--raw", target, env=NO_AUTH)
    assert json.loads(raw.out) == skopeo_raw(target)
    full = json.loads(run_pybuild(shared_root, "imagetools", "inspect", "--format", "json",
                                  target, env=NO_AUTH).out)
    assert full["name"] == target and full["manifest"]["mediaType"] == mt.OCI_INDEX
    assert {k: v["architecture"] for k, v in full["image"].items()} == {
        "linux/amd64": "amd64", "linux/arm64": "arm64"}
    manifest = json.loads(run_pybuild(shared_root, "imagetools", "inspect", "--format",
                                      "{{json .Manifest}}", target, env=NO_AUTH).out)
    assert len(manifest["manifests"]) == 2
    bad = run_pybuild(shared_root, "imagetools", "inspect", "--format", "{{.Name}}", target,
                      env=NO_AUTH)
    assert bad.code == 1 and "Go templates" in bad.err


def test_imagetools_errors_are_buildx_s(shared_root: Path,
                                        registry: RunningRegistry,  # noqa: F811
                                        by_digest: dict[str, Descriptor]) -> None:
    src = registry.ref(f"it/app@{by_digest['amd64'].digest}")
    cases = [
        (["create", src], "no tags specified"),
        (["create", "-t", registry.ref("it/x:1"), "--annotation", "foo=bar", src],
         "has no type"),
        (["create", "-t", registry.ref("it/x:1"), "--annotation", "manifest:foo=bar", src],
         "'manifest' annotations cannot be set"),
        (["create", "-t", registry.ref("it/x:1"), "-t", registry.ref("other/y:1"),
          str(by_digest["amd64"].digest)], "cannot infer the repository"),
        (["create", "-t", registry.ref("it/x:1"), "--platform", "linux/s390x", src],
         "no source has platform linux/s390x"),
        (["inspect", "--raw", "--format", "json", src], "cannot be used together"),
    ]
    for args, message in cases:
        r = run_pybuild(shared_root, "imagetools", *args, env=NO_AUTH)
        assert r.code == 1 and message in r.err, (args, r.err)
        assert "Traceback" not in r.err


# --- push --platform, push --compression, schema 1 -----------------------------------------


def test_push_one_platform_and_other_compressions(
        shared_root: Path, registry: RunningRegistry, tmp_path: Path) -> None:  # noqa: F811
    arm = registry.ref("push/arm:1")
    r = run_pybuild(shared_root, "push", "--platform", "linux/arm64", "busybox:latest", arm,
                    env=NO_AUTH)
    assert r.code == 0, r.err
    manifest = skopeo_raw(arm)
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    config = json.loads(subprocess.run(
        [require_tool("skopeo"), "inspect", "--config", "--tls-verify=false",
         f"docker://{arm}"], capture_output=True, check=True, timeout=60).stdout)
    assert config["architecture"] == "arm64"
    # a built layer (kept uncompressed in the store) gets the asked compression; the base
    # image's gzip layer stays gzip, as BuildKit keeps it without force-compression
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo compressed > /c\n")
    assert run_pybuild(shared_root, "build", "-t", "compress:1", str(ctx)).code == 0
    for kind, media in (("zstd", mt.OCI_LAYER_ZSTD), ("uncompressed", mt.OCI_LAYER)):
        ref = registry.ref(f"push/{kind}:1")
        p = run_pybuild(shared_root, "push", "--compression", kind, "compress:1", ref,
                        env=NO_AUTH)
        assert p.code == 0, p.err
        layers = skopeo_raw(ref)["layers"]
        assert isinstance(layers, list)
        assert [x["mediaType"] for x in layers] == [mt.OCI_LAYER_GZIP, media]
        out = tmp_path / kind
        subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false",
                        f"docker://{ref}", f"dir:{out}"], check=True, capture_output=True,
                       timeout=120)
    single = run_pybuild(shared_root, "push", "--platform", "linux/amd64",
                         registry.ref("push/arm:1"), registry.ref("push/x:1"), env=NO_AUTH)
    assert single.code == 1


def test_pulling_a_schema_1_manifest_says_so(trav: Path, base_layout: Path,
                                             tmp_path: Path) -> None:
    with run_registry(schema1=True) as old:
        ref = old.ref("legacy/busybox:v1")
        subprocess.run([require_tool("skopeo"), "copy", "--format", "v2s1",
                        "--dest-tls-verify=false", f"oci:{base_layout}:latest",
                        f"docker://{ref}"], check=True, capture_output=True, timeout=120)
        r = run_pybuild(trav / "root", "pull", ref, env=NO_AUTH)
        assert r.code == 1
        assert "Docker schema 1 manifest" in r.err and "Traceback" not in r.err
        assert "integrity" not in r.err.lower() and "hashes to" not in r.err
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {ref}\n")
        b = run_pybuild(trav / "root", "build", str(ctx), env=NO_AUTH)
        assert b.code == 1 and "schema 1" in b.err


def test_create_from_another_registry_copies_the_blobs(
        shared_root: Path, registry: RunningRegistry,  # noqa: F811
        by_digest: dict[str, Descriptor]) -> None:
    amd = by_digest["amd64"]
    with run_registry() as other:
        subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        f"docker://{registry.ref(f'it/amd64@{amd.digest}')}",
                        f"docker://{other.ref('far/amd64:1')}"], check=True,
                       capture_output=True, timeout=120)
        r = run_pybuild(shared_root, "imagetools", "create", "-t",
                        registry.ref("it/from-far:1"), other.ref("far/amd64:1"), env=NO_AUTH)
        assert r.code == 0, r.err
    index = skopeo_raw(registry.ref("it/from-far:1"))
    [digest] = platforms_of(index).values()
    child = registry.ref(f"it/from-far@{digest}")
    subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false",
                    f"docker://{child}", f"dir:{shared_root.parent / 'far-copy'}"], check=True,
                   capture_output=True, timeout=120)

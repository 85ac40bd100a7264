"""The image outputs' options on buildx command lines, one table row each: the option, the
command line, and its effect on the artifact (the archive read back by skopeo or podman,
the layout's index.json, every image checked by `pybuild.oci.validate`), or the error that
names it. A regression names its option: the test ids are the options."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.content.walk import read_config, read_manifest
from pybuild.oci import mediatypes as mt
from pybuild.oci.validate import validate_image
from pybuild.transports.endpoints import location_of, read_all
from tests.integration.conftest import _import_base, tool, traversable_dir
from tests.integration.test_cli_compat import Run, _podman, ctx_with, ok, run, skopeo_json
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401

DF = "FROM busybox\nCOPY f /f\nENV OUT=1\n"


@pytest.fixture(scope="module")
def root(base_layout: Path) -> Iterator[Path]:
    base = traversable_dir("pybuild-outputs-")
    _import_base(base / "root", base_layout)
    yield base / "root"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def work() -> Iterator[Path]:
    d = traversable_dir("pybuild-outputs-work-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return f.read()


def _json(archive: Path, name: str) -> dict[str, object]:
    data = json.loads(_member(archive, name))
    return data if isinstance(data, dict) else {"list": data}


def _blob(archive: Path, digest: str) -> dict[str, object]:
    return _json(archive, "blobs/sha256/" + digest.removeprefix("sha256:"))


def _images(archive: Path, work: Path) -> list[tuple[ContentStore, object]]:
    """Every image of the archive, read into a fresh store and validated there."""
    store = ContentStore(work / f"check-{uuid.uuid4().hex[:6]}")
    images = read_all(location_of(archive), store)
    for image in images:
        validate_image(store, image.descriptor)
    return [(store, i) for i in images]


# -- one row per option ---------------------------------------------------------------------------


@dataclass
class Case:
    option: str
    argv: Callable[[Path], list[str]]  # given the output path
    check: Callable[[Path, Path, Run], None]  # (output path, work dir, result)


def _docker_types(out: Path, work: Path, r: Run) -> None:
    ok(r)
    (entry,) = _json(out, "index.json")["manifests"]  # type: ignore[misc]
    assert entry["mediaType"] == mt.DOCKER_MANIFEST
    manifest = _blob(out, entry["digest"])
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == mt.DOCKER_CONFIG  # type: ignore[index]
    assert {x["mediaType"] for x in manifest["layers"]} == {mt.DOCKER_LAYER_GZIP}  # type: ignore[attr-defined]
    docker = json.loads(_member(out, "manifest.json"))
    assert docker[0]["RepoTags"] == ["out:1"]
    info = skopeo_json("inspect", f"docker-archive:{out}")
    config = _blob(out, manifest["config"]["digest"])  # type: ignore[index]
    assert info["Layers"] == config["rootfs"]["diff_ids"]  # type: ignore[index]
    _images(out, work)


def _oci_types(docker_archive: bool) -> Callable[[Path, Path, Run], None]:
    def check(out: Path, work: Path, r: Run) -> None:
        ok(r)
        (entry,) = _json(out, "index.json")["manifests"]  # type: ignore[misc]
        manifest = _blob(out, entry["digest"])
        assert entry["mediaType"] == manifest["mediaType"] == mt.OCI_MANIFEST
        assert manifest["config"]["mediaType"] == mt.OCI_CONFIG  # type: ignore[index]
        assert {x["mediaType"] for x in manifest["layers"]} == {mt.OCI_LAYER_GZIP}  # type: ignore[attr-defined]
        raw = skopeo_json("inspect", "--raw", f"oci-archive:{out}")
        assert raw["mediaType"] == mt.OCI_MANIFEST
        if docker_archive:
            assert json.loads(_member(out, "manifest.json"))[0]["RepoTags"] == ["out:1"]
        _images(out, work)

    return check


def _docker_types_in_layout(out: Path, work: Path, r: Run) -> None:
    ok(r)
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:])
                          .read_text())
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert {x["mediaType"] for x in manifest["layers"]} == {mt.DOCKER_LAYER_GZIP}
    store = ContentStore(work / "check")
    (image,) = read_all(location_of(out), store)
    validate_image(store, image.descriptor)


def _all_zstd(out: Path, work: Path, r: Run) -> None:
    ok(r)
    raw = skopeo_json("inspect", "--raw", f"oci-archive:{out}")
    assert {x["mediaType"] for x in raw["layers"]} == {mt.OCI_LAYER_ZSTD}  # type: ignore[attr-defined]
    ((store, image),) = _images(out, work)
    config = read_config(store, read_manifest(store, image.descriptor))  # type: ignore[attr-defined]
    assert len(config.diff_ids) == 2  # the base's layer and ours, both zstd now


def _base_kept(out: Path, work: Path, r: Run) -> None:
    ok(r)
    raw = skopeo_json("inspect", "--raw", f"oci-archive:{out}")
    assert [x["mediaType"] for x in raw["layers"]] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD]  # type: ignore[attr-defined]
    _images(out, work)


def _refused(*needles: str) -> Callable[[Path, Path, Run], None]:
    def check(out: Path, work: Path, r: Run) -> None:
        assert r.code == 1, r.err
        for needle in needles:
            assert needle in r.err, r.err
        assert "Traceback" not in r.err and "#1" not in r.err  # refused before building
        assert not out.exists()

    return check


def _ctx(work: Path) -> str:
    return str(ctx_with(work, DF, f="f\n"))


CASES = [
    Case("type=docker: Docker media types by default",
         lambda o: ["-o", f"type=docker,dest={o}"], _docker_types),
    Case("type=docker,oci-mediatypes=true",
         lambda o: ["-o", f"type=docker,dest={o},oci-mediatypes=true"], _oci_types(True)),
    Case("type=oci: OCI media types by default",
         lambda o: ["-o", f"type=oci,dest={o}"], _oci_types(False)),
    Case("type=oci,oci-mediatypes=false",
         lambda o: ["-o", f"type=oci,dest={o},tar=false,oci-mediatypes=false"],
         _docker_types_in_layout),
    Case("compression=zstd (base layers kept)",
         lambda o: ["-o", f"type=oci,dest={o},compression=zstd"], _base_kept),
    Case("compression=zstd,force-compression=true",
         lambda o: ["-o", f"type=oci,dest={o},compression=zstd,force-compression=true,"
                          "compression-level=19"], _all_zstd),
    Case("compression-level out of range",
         lambda o: ["-o", f"type=oci,dest={o},compression-level=12"],
         _refused("type=oci: compression-level=12: gzip takes 0 to 9")),
    Case("compression-level without compression",
         lambda o: ["-o", f"type=oci,dest={o},compression=uncompressed,compression-level=3"],
         _refused("compression-level=3 has nothing to compress")),
    Case("compression=estargz", lambda o: ["-o", f"type=oci,dest={o},compression=estargz"],
         _refused("compression=estargz is not supported")),
    Case("rewrite-timestamp without SOURCE_DATE_EPOCH",
         lambda o: ["-o", f"type=oci,dest={o},rewrite-timestamp=true"],
         _refused("rewrite-timestamp=true needs SOURCE_DATE_EPOCH")),
    Case("type=image,push=false,compression=",
         lambda o: ["-o", "type=image,name=x:1,compression=zstd"],
         _refused("type=image,push=false: compression has nothing to do")),
    Case("annotation-index on one platform",
         lambda o: ["-o", f"type=oci,dest={o},annotation-index.k=v"],
         _refused("single platform export")),
    Case("annotation-manifest-descriptor with Docker media types",
         lambda o: ["-o", f"type=docker,dest={o},annotation-manifest-descriptor.k=v"],
         _refused("manifest-descriptor annotations with oci-mediatypes=false")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.option for c in CASES])
def test_output_option(case: Case, root: Path, work: Path) -> None:
    out = work / "out.tar"
    r = run(root, "build", "-t", "out:1", *case.argv(out), _ctx(work),
            unset=("SOURCE_DATE_EPOCH",))
    case.check(out, work, r)


# -- names -------------------------------------------------------------------------------------


def test_every_name_goes_into_the_archives(root: Path, work: Path) -> None:
    oci, docker = work / "o.tar", work / "d.tar"
    tag = uuid.uuid4().hex[:8]
    names = [f"localhost/names/a-{tag}:1", f"names-b-{tag}:2"]
    ok(run(root, "build", "-t", names[0], "-t", names[1], "-o", f"type=oci,dest={oci}",
           "-o", f"type=docker,dest={docker}", _ctx(work)))
    full = [f"localhost/names/a-{tag}:1", f"docker.io/library/names-b-{tag}:2"]
    for archive in (oci, docker):
        entries = _json(archive, "index.json")["manifests"]
        assert [(e["annotations"]["io.containerd.image.name"],  # type: ignore[index]
                 e["annotations"]["org.opencontainers.image.ref.name"])  # type: ignore[index]
                for e in entries] == [(full[0], "1"), (full[1], "2")]  # type: ignore[union-attr]
    assert json.loads(_member(docker, "manifest.json"))[0]["RepoTags"] == names
    for ref in ("1", "2"):
        assert skopeo_json("inspect", "--raw", f"oci-archive:{oci}:{ref}")["mediaType"] == (
            mt.OCI_MANIFEST)
    for name in names:
        assert skopeo_json("inspect", f"docker-archive:{docker}:{name}")["Layers"]
    ((_, image),) = _images(oci, work)  # one image, both names recorded for it
    assert sorted(image.names) == sorted(full)  # type: ignore[attr-defined]
    tool("podman")
    loaded = _podman("load", "-i", str(docker))
    try:
        assert loaded.returncode == 0, loaded.stderr
        for name in (f"localhost/names/a-{tag}:1", f"localhost/names-b-{tag}:2"):
            assert _podman("image", "exists", name).returncode == 0, (name, loaded.stdout)
    finally:
        _podman("rmi", "--force", f"localhost/names/a-{tag}:1", f"localhost/names-b-{tag}:2")


# -- annotations -------------------------------------------------------------------------------


def test_annotations_of_a_multi_platform_result(root: Path, work: Path) -> None:
    out = work / "multi.tar"
    ok(run(root, "build", "--platform", "linux/amd64,linux/arm64",
           "--annotation", "org.opencontainers.image.title=all",
           "--annotation", "index:i=1",
           "--annotation", "manifest[linux/arm64]:arch=arm",
           "--annotation", "manifest-descriptor[linux/amd64]:d=amd",
           "-o", f"type=oci,dest={out},annotation-index-descriptor.top=yes,"
                 "annotation-manifest[linux/amd64].arch=amd",
           str(ctx_with(work, "FROM busybox\nENV M=1\n"))))
    (entry,) = _json(out, "index.json")["manifests"]  # type: ignore[misc]
    assert entry["annotations"] == {"top": "yes"}
    index = skopeo_json("inspect", "--raw", f"oci-archive:{out}")
    assert index["annotations"] == {"i": "1"}
    by_arch = {m["platform"]["architecture"]: m for m in index["manifests"]}  # type: ignore[attr-defined]
    assert by_arch["amd64"]["annotations"] == {"d": "amd"}
    assert "annotations" not in by_arch["arm64"]
    for arch, value in (("amd64", "amd"), ("arm64", "arm")):
        manifest = _blob(out, by_arch[arch]["digest"])
        assert manifest["annotations"] == {"org.opencontainers.image.title": "all",
                                           "arch": value}
    _images(out, work)
    r = run(root, "build", "--platform", "linux/amd64,linux/arm64", "--annotation",
            "manifest[linux/s390x]:k=v", "-o", f"type=oci,dest={work}/x.tar",
            str(ctx_with(work, "FROM busybox\nENV M=1\n")))
    assert r.code == 1 and "no platform linux/s390x" in r.err, r.err


# -- rewrite-timestamp -------------------------------------------------------------------------


def _layer_mtimes(archive: Path) -> list[dict[str, int]]:
    import io

    from pybuild.layers.decompress import decompressed

    raw = skopeo_json("inspect", "--raw", f"oci-archive:{archive}")
    out = []
    for layer in raw["layers"]:  # type: ignore[attr-defined]
        data = _member(archive, "blobs/sha256/" + layer["digest"][7:])
        with tarfile.open(fileobj=decompressed(io.BytesIO(data)), mode="r|") as tar:  # type: ignore[arg-type]
            out.append({m.name: int(m.mtime) for m in tar})
    return out


def test_rewrite_timestamp_makes_the_same_layers_at_another_time(
        root: Path, work: Path) -> None:
    epoch = 900_000_000  # 1998: the busybox base (2000) is later, yet kept
    ctx = ctx_with(work, "FROM busybox\nCOPY f /app/f\nRUN echo made > /app/made\n", f="f\n")
    # built once without an epoch: the step's layer has today's times, and is cached
    ok(run(root, "build", "-o", f"type=oci,dest={work}/plain.tar", str(ctx)))
    outs = []
    for n, extra in enumerate(([], ["--no-cache"])):
        time.sleep(1.1)  # another second: files made now get another mtime
        (ctx / "f").touch()
        out = work / f"r{n}.tar"
        ok(run(root, "build", *extra, "--build-arg", f"SOURCE_DATE_EPOCH={epoch}",
               "-o", f"type=oci,dest={out},rewrite-timestamp=true", str(ctx)))
        outs.append(out)
    layers = [skopeo_json("inspect", "--raw", f"oci-archive:{o}")["layers"] for o in outs]
    assert layers[0] == layers[1]  # the very same layer blobs
    base, *ours = _layer_mtimes(outs[0])
    assert max(base.values()) > epoch  # the base image's layer is its own (BuildKit #4614)
    for times in ours:
        assert times and max(times.values()) <= epoch, times
    _images(outs[0], work)


# -- push ------------------------------------------------------------------------------------


def test_push_with_docker_media_types_and_annotations(
        root: Path, work: Path, registry: RunningRegistry) -> None:  # noqa: F811
    ref = registry.ref(f"outputs/app-{uuid.uuid4().hex[:6]}:1")
    meta = work / "meta.json"
    ok(run(root, "build", "-t", ref, "--metadata-file", str(meta), "--annotation", "k=v",
           "-o", "type=registry,oci-mediatypes=false,compression=zstd,"
                 "annotation.org.opencontainers.image.title=t", _ctx(work)))
    raw = skopeo_json("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw["mediaType"] == mt.DOCKER_MANIFEST
    assert raw["config"]["mediaType"] == mt.DOCKER_CONFIG  # type: ignore[index]
    assert [x["mediaType"] for x in raw["layers"]] == [  # type: ignore[attr-defined]
        mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_ZSTD]  # the base's gzip kept (no force)
    assert raw["annotations"] == {"k": "v", "org.opencontainers.image.title": "t"}
    digest = json.loads(meta.read_text())["containerimage.digest"]
    # (skopeo 1.9 knows no Docker zstd layer type beyond --raw: the bytes' digest, then)
    raw_bytes = subprocess.run([tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                                f"docker://{ref}"], capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw_bytes).hexdigest() == digest
    # the store's name is the same image, with its layers uncompressed
    stored = json.loads(ok(run(root, "inspect", ref)).out)
    assert stored["manifest"]["mediaType"] == mt.DOCKER_MANIFEST
    assert stored["manifest"]["annotations"] == raw["annotations"]
    assert stored["Id"] == raw["config"]["digest"]  # type: ignore[index]


def test_export_of_a_stored_image(root: Path, work: Path) -> None:
    ok(run(root, "build", "-t", "stored:1", _ctx(work)))
    out = work / "s.tar"
    ok(run(root, "export", "stored:1", "-o", f"type=docker,dest={out},compression=zstd"))
    raw = _blob(out, _json(out, "index.json")["manifests"][0]["digest"])  # type: ignore[index]
    assert raw["mediaType"] == mt.DOCKER_MANIFEST
    assert [x["mediaType"] for x in raw["layers"]] == [mt.DOCKER_LAYER_GZIP,  # type: ignore[attr-defined]
                                                      mt.DOCKER_LAYER_ZSTD]
    _images(out, work)
    r = run(root, "export", "stored:1", "-o", f"type=oci,dest={out},rewrite-timestamp=true")
    assert r.code == 1 and "needs SOURCE_DATE_EPOCH" in r.err, r.err
    r = run(root, "export", "stored:1", "-o", "type=image,name=x:1")
    assert r.code == 1 and "outputs of a build" in r.err and "Traceback" not in r.err, r.err


def test_docker_output_without_dest_takes_its_options_to_the_engine(
        root: Path, work: Path) -> None:
    tool("podman")
    r = run(root, "build", "-o", "type=docker,compression-level=99", _ctx(work))
    assert r.code == 1 and "compression-level=99" in r.err and "#1" not in r.err, r.err
    r = run(root, "build", "--build-arg", "SOURCE_DATE_EPOCH=1", "-o",
            "type=docker,rewrite-timestamp=true", _ctx(work))
    assert r.code == 1 and "not supported for an engine load" in r.err, r.err
    name = f"localhost/outputs/loaded-{uuid.uuid4().hex[:8]}:1"
    try:
        ok(run(root, "build", "-o", f"type=docker,name={name},compression=gzip,"
                                    "annotation.k=v", _ctx(work)))
        assert _podman("image", "exists", name).returncode == 0
    finally:
        _podman("rmi", "--force", name)


def test_push_of_a_multi_platform_result_with_annotations(
        root: Path, work: Path, registry: RunningRegistry) -> None:  # noqa: F811
    ref = registry.ref(f"outputs/multi-{uuid.uuid4().hex[:6]}:1")
    ok(run(root, "build", "--push", "-t", ref, "--platform", "linux/amd64,linux/arm64",
           "--annotation", "index:i=1", "--annotation", "manifest[linux/arm64]:a=arm",
           "--annotation", "manifest-descriptor:d=all",
           str(ctx_with(work, "FROM busybox\nENV P=1\n"))))
    raw = skopeo_json("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw["mediaType"] == mt.OCI_INDEX and raw["annotations"] == {"i": "1"}
    for child in raw["manifests"]:  # type: ignore[attr-defined]
        assert child["annotations"] == {"d": "all"}
        manifest = skopeo_json("inspect", "--raw", "--tls-verify=false",
                               f"docker://{ref.rpartition(':')[0]}@{child['digest']}")
        want = {"a": "arm"} if child["platform"]["architecture"] == "arm64" else None
        assert manifest.get("annotations") == want, manifest

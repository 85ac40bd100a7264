"""--cache-to / --cache-from: a second machine (a fresh pybuild root) reuses the first one's
steps through a local OCI layout or a real registry, as with buildx's cache backends."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    _import_base,
    run_pybuild,
    tool,
    traversable_dir,
    umoci_rootfs,
)
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401

DOCKERFILE = """\
FROM busybox AS deps
RUN echo deps > /deps.txt

FROM busybox
ARG TOKEN
COPY app.txt /app/app.txt
RUN cat /app/app.txt > /app/copy && echo "${TOKEN%%-*}" > /app/token-prefix
COPY --from=deps /deps.txt /app/deps.txt
RUN ls /app > /app/listing
"""
SECRET_VALUE = "s3cr3t-build-arg-value"
SECRET_PREFIX = b"s3cr3t"  # what the RUN line shows once expanded


def _ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app.txt").write_text("app\n")
    return ctx


@pytest.fixture
def new_root(base_layout: Path) -> Iterator[Callable[[], Path]]:
    """Fresh pybuild roots (a machine each), all removed when the test ends."""
    made: list[Path] = []

    def make() -> Path:
        base = traversable_dir("pybuild-cache-remote-")
        made.append(base)
        _import_base(base / "root", base_layout)
        return base / "root"

    yield make
    for base in made:
        shutil.rmtree(base, ignore_errors=True)


def _events(out: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def _build(root: Path, ctx: Path, *flags: str) -> tuple[list[str], list[dict[str, object]]]:
    r = run_pybuild(root, "build", "--progress", "rawjson", "-t", "app:1",
                    "--build-arg", f"TOKEN={SECRET_VALUE}", *flags, str(ctx))
    assert r.code == 0, r.err
    events = _events(r.out)
    started = [str(e["name"]) for e in events if e["type"] == "VertexStarted"]
    return started, events


def _diff_ids(root: Path) -> list[str]:
    cfg = json.loads(run_pybuild(root, "inspect", "app:1").out)["config"]
    return list(cfg["rootfs"]["diff_ids"])


def test_local_cache_round_trip(tmp_path: Path, new_root: Callable[[], Path]) -> None:
    ctx = _ctx(tmp_path)
    dest = tmp_path / "cache-max"
    first = new_root()
    started, _ = _build(first, ctx, "--cache-to", f"type=local,dest={dest},mode=max")
    assert sum("RUN" in s for s in started) == 3
    # An independent reader sees an OCI layout with one manifest whose config is the cache.
    skopeo = tool("skopeo")
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci:{dest}:latest"],
                                    check=True, capture_output=True, text=True).stdout)
    assert raw["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"
    assert all(x["mediaType"].endswith("tar+gzip") for x in raw["layers"])
    # Build-arg values never travel with the cache: not in the records (whose step names
    # would show the expanded RUN line), nowhere else either.
    config = (dest / "blobs" / "sha256" / raw["config"]["digest"].split(":")[1]).read_bytes()
    assert b'"records"' in config and SECRET_PREFIX not in config
    for blob in dest.rglob("*"):
        if blob.is_file():
            assert SECRET_VALUE.encode() not in blob.read_bytes(), blob

    # A fresh root with the cache runs nothing and gets the same layers.
    second = new_root()
    started, events = _build(second, ctx, "--cache-from", f"type=local,src={dest}")
    assert started == []
    assert sum(e["type"] == "VertexCached" for e in events) >= 5
    assert _diff_ids(second) == _diff_ids(first)
    # The image made of imported layers unpacks with an independent tool.
    files = umoci_rootfs(second, "app:1", tmp_path)
    assert (files / "app" / "copy").read_text() == "app\n"
    assert (files / "app" / "deps.txt").read_text() == "deps\n"
    assert (files / "app" / "listing").read_text().split() == [
        "app.txt", "copy", "deps.txt", "listing", "token-prefix"]
    # The imported records are local now: no cache-from needed any more.
    started, _ = _build(second, ctx)
    assert started == []

    # A changed file re-runs only what depends on it, even through an imported cache.
    (ctx / "app.txt").write_text("changed\n")
    third = new_root()
    started, _ = _build(third, ctx, "--cache-from", f"type=local,src={dest}")
    names = [s.split("] ", 1)[1] for s in started]
    assert names == ["COPY app.txt /app/app.txt",
                     'RUN cat /app/app.txt > /app/copy && echo "s3cr3t" > /app/token-prefix',
                     "COPY --from=deps /deps.txt /app/deps.txt", "RUN ls /app > /app/listing"
                     ], names


def test_min_mode_exports_only_the_result_chain(tmp_path: Path,
                                                new_root: Callable[[], Path]) -> None:
    ctx = _ctx(tmp_path)
    dest = tmp_path / "cache-min"
    _build(new_root(), ctx, "--cache-to", f"type=local,dest={dest}")
    started, _ = _build(new_root(), ctx, "--cache-from", f"type=local,src={dest}")
    # The deps stage's RUN is not in the image, so mode=min leaves it out; the final
    # stage's steps come from the cache.
    assert started == ["[deps 2/2] RUN echo deps > /deps.txt"], started


def test_registry_cache_round_trip(tmp_path: Path, new_root: Callable[[], Path],
                                   registry: RunningRegistry) -> None:  # noqa: F811
    ctx = _ctx(tmp_path)
    ref = registry.ref("pybuild/cache:buildcache")
    first = new_root()
    _build(first, ctx, "--cache-to", f"type=registry,ref={ref},mode=max")
    skopeo = tool("skopeo")
    raw = json.loads(subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True, text=True).stdout)
    assert raw["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"
    second = new_root()
    started, _ = _build(second, ctx, "--cache-from", ref)  # a bare ref means type=registry
    assert started == []
    assert _diff_ids(second) == _diff_ids(first)


def test_unusable_cache_sources(tmp_path: Path, new_root: Callable[[], Path]) -> None:
    ctx = _ctx(tmp_path)
    root = new_root()
    # A missing source is a warning: the build goes on without it.
    r = run_pybuild(root, "build", "--progress", "plain", "--cache-from",
                    f"type=local,src={tmp_path / 'nothing'}", str(ctx))
    assert r.code == 0, r.err
    assert "cache import from" in r.err and "skipped" in r.err
    # Backends pybuild cannot reach are refused up front with a hint.
    r = run_pybuild(root, "build", "--cache-to", "type=gha", str(ctx))
    assert r.code == 1
    assert "type=gha is not supported" in r.err and "Traceback" not in r.err
    r = run_pybuild(root, "build", "--cache-to", "type=local", str(ctx))
    assert r.code == 1 and "needs dest=" in r.err

"""Registry round trips through the CLI: build --push, push, pull, FROM a registry image,
named image contexts, and secrets given on the command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.integration.conftest import run_pybuild, tool
from tests.registry_fixture import RunningRegistry, registry  # noqa: F401


def _ctx(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_build_push_then_pull_and_build_from_the_registry(
        fresh_root: Path, tmp_path: Path, registry: RunningRegistry) -> None:  # noqa: F811
    skopeo = tool("skopeo")
    ref = registry.ref("pybuild/app:1")
    ctx = _ctx(tmp_path, "FROM busybox\nRUN echo pushed > /marker\n")
    r = run_pybuild(fresh_root, "build", "-t", ref, "--push", str(ctx))
    assert r.code == 0, r.err
    local = json.loads(run_pybuild(fresh_root, "inspect", ref).out)
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    pushed = json.loads(raw)
    # Pushed layers are gzip-compressed from the store's uncompressed ones; same config.
    assert pushed["config"] == local["manifest"]["config"]
    assert len(pushed["layers"]) == len(local["manifest"]["layers"])
    assert all(x["mediaType"].endswith("tar+gzip") for x in pushed["layers"])

    # A second root knows nothing: `FROM <registry ref>` pulls the base on demand.
    other = fresh_root.parent / "other-root"
    child = _ctx(tmp_path, f"FROM {ref}\nRUN cat /marker > /copied\n", "child")
    b = run_pybuild(other, "build", "-t", "child:1", "--progress", "plain", str(child))
    assert b.code == 0, b.err
    assert ref.split("/", 1)[1].split(":")[0] in run_pybuild(other, "images").out

    # pull/push commands
    p = run_pybuild(other, "pull", ref)
    pushed_digest = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    assert p.code == 0 and pushed_digest in p.out, p.err
    dest = registry.ref("pybuild/copy:2")
    q = run_pybuild(other, "push", ref, dest)
    assert q.code == 0, q.err
    raw2 = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                          check=True, capture_output=True, text=True).stdout
    assert raw2 == raw


def test_missing_image_in_a_registry_is_a_clear_error(
        fresh_root: Path, tmp_path: Path, registry: RunningRegistry) -> None:  # noqa: F811
    ctx = _ctx(tmp_path, f"FROM {registry.ref('nope/missing:1')}\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "Dockerfile:1" in r.err and "not found" in r.err
    assert "Traceback" not in r.err


def test_named_image_context_replaces_a_stage(fresh_root: Path, tmp_path: Path) -> None:
    # BuildKit: `--build-context base=docker-image://busybox` replaces stage `base`,
    # whose own RUN then never runs.
    ctx = _ctx(tmp_path, "FROM busybox AS base\nRUN exit 7\n\nFROM base\nRUN echo ok > /ok\n")
    r = run_pybuild(fresh_root, "build", "--build-context", "base=docker-image://busybox",
                    "-t", "named:1", "--progress", "plain", str(ctx))
    assert r.code == 0, r.err
    assert "exit 7" not in r.err


def test_secret_from_cli_is_readable_and_stored_nowhere(fresh_root: Path,
                                                        tmp_path: Path) -> None:
    secret = tmp_path / "token"
    value = "s3cr3t-value-6f1c2a"
    secret.write_text(value)
    ctx = _ctx(tmp_path, "FROM busybox\nRUN --mount=type=secret,id=tok "
                         "cat /run/secrets/tok | tr a-z A-Z > /upper\n")
    r = run_pybuild(fresh_root, "build", "--secret", f"id=tok,src={secret}", "-t", "sec:1",
                    str(ctx))
    assert r.code == 0, r.err
    out = tmp_path / "out"
    e = run_pybuild(fresh_root, "export", "sec:1", "-o", f"type=local,dest={out}")
    assert e.code == 0, e.err
    assert (out / "upper").read_text() == value.upper()
    assert not (out / "run" / "secrets").exists()
    hits = subprocess.run(["grep", "-rl", value, str(fresh_root)], capture_output=True,
                          text=True)
    assert hits.stdout == "", f"secret found in {hits.stdout}"

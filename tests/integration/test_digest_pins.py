"""`FROM name@sha256:X` resolves content X, never whatever the store holds under `name`
(conformance-gaps P7), and names cannot carry a digest that is not their image's."""

from __future__ import annotations

import json
from pathlib import Path

from pybuild.root import Root
from tests.integration.conftest import run_pybuild


def _ctx(tmp: Path, name: str, dockerfile: str) -> Path:
    ctx = tmp / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def _base_manifest(root: Path, image: str) -> dict[str, object]:
    r = run_pybuild(root, "inspect", image)
    assert r.code == 0, r.err
    return dict(json.loads(r.out))


def test_a_pin_resolves_the_stored_content_it_names(fresh_root: Path, tmp_path: Path) -> None:
    busybox = Root(fresh_root).images.get("busybox:latest").descriptor
    # Another image stored under the name the pin uses: it must not be what builds.
    other = _ctx(tmp_path, "other", "FROM busybox\nRUN echo other > /other\n")
    assert run_pybuild(fresh_root, "build", "-t", "pinned:latest", str(other)).code == 0
    ctx = _ctx(tmp_path, "app", f"FROM pinned@{busybox.digest}\nRUN ls /other 2>&1 || "
               "echo clean > /state\n")
    r = run_pybuild(fresh_root, "build", "--pull", "never", "-t", "app:1", str(ctx))
    assert r.code == 0, r.err
    built = _base_manifest(fresh_root, "app:1")
    base = _base_manifest(fresh_root, "busybox:latest")
    layers = [x["digest"] for x in built["manifest"]["layers"]]  # type: ignore[index]
    base_layers = [x["digest"] for x in base["manifest"]["layers"]]  # type: ignore[index]
    assert layers[: len(base_layers)] == base_layers and len(layers) == len(base_layers) + 1
    out = tmp_path / "out"
    assert run_pybuild(fresh_root, "export", "app:1", "-o", f"type=local,dest={out}").code == 0
    assert (out / "state").read_text() == "clean\n" and not (out / "other").exists()


def test_a_pin_of_the_stored_busybox_builds_locally(fresh_root: Path, tmp_path: Path) -> None:
    busybox = Root(fresh_root).images.get("busybox:latest").descriptor
    ctx = _ctx(tmp_path, "app", f"FROM busybox@{busybox.digest}\nRUN true\n")
    r = run_pybuild(fresh_root, "build", "--pull", "never", str(ctx))
    assert r.code == 0, r.err
    # A no-op rebuild of a pinned base needs no frontend (its memo holds): nothing runs.
    r = run_pybuild(fresh_root, "build", "--pull", "never", "--progress", "rawjson", str(ctx))
    assert r.code == 0 and '"VertexStarted"' not in r.out


def test_a_pin_of_missing_content_is_not_answered_by_the_name(fresh_root: Path,
                                                              tmp_path: Path) -> None:
    missing = "sha256:" + "0" * 64
    ctx = _ctx(tmp_path, "app", f"FROM busybox@{missing}\nRUN true\n")
    r = run_pybuild(fresh_root, "build", "--pull", "never", str(ctx))
    assert r.code == 1 and "not in the local image store" in r.err
    assert "Traceback" not in r.err and "Dockerfile:1" in r.err


def test_names_with_another_images_digest_are_refused(fresh_root: Path, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    r = run_pybuild(fresh_root, "tag", "busybox:latest", f"alpine@{wrong}")
    assert r.code == 1 and "pins another digest" in r.err
    busybox = Root(fresh_root).images.get("busybox:latest").descriptor
    assert run_pybuild(fresh_root, "tag", "busybox:latest", f"bb@{busybox.digest}").code == 0
    layout = tmp_path / "layout"
    assert run_pybuild(fresh_root, "export", "busybox:latest", "-o",
                       f"type=oci,dest={layout},tar=false").code == 0
    r = run_pybuild(fresh_root, "load", "-i", str(layout), "-t", f"debian@{wrong}")
    assert r.code == 1 and "pins another digest" in r.err
    assert Root(fresh_root).images.find(f"debian@{wrong}") is None
    ctx = _ctx(tmp_path, "app", "FROM busybox\nRUN true\n")
    r = run_pybuild(fresh_root, "build", "--progress", "rawjson", "-t", f"app@{wrong}",
                    str(ctx))
    assert r.code == 1 and "cannot pin a digest" in r.err
    assert '"VertexStarted"' not in r.out  # refused before anything ran

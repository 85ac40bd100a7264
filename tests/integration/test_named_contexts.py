"""Named build contexts (`--build-context name=DIR|oci-layout://DIR@DIGEST`), end to end.

A named local directory is read like the main context, with its own .dockerignore (as
BuildKit's named local contexts are) and its files hashed into the cache keys; an OCI
layout's image is imported into the content store and used like a base image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from pybuild.builder.ops.source import SourceHandler
from pybuild.digest import Digest
from pybuild.llb import SourceOp
from pybuild.root import Root
from tests.integration.conftest import (
    PybuildRunner,
    _import_base,
    run_pybuild,
    traversable_dir,
)
from tests.integration.test_cache import _build

LOCAL = """\
FROM busybox
COPY --from=other --parents ./sub/d.txt /par/
COPY --from=other . /fromother/
RUN --mount=from=other,target=/mnt cat /mnt/o.txt > /mounted && ls -a /mnt > /mntlist
"""


def test_named_local_context(shared_root: Path, tmp_path: Path) -> None:
    main, other = tmp_path / "main", tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    main.mkdir()
    (main / "Dockerfile").write_text(LOCAL)
    (main / ".dockerignore").write_text("secret.txt\n")  # must not apply to `other`
    (other / ".dockerignore").write_text("ignored.txt\n")
    (other / "secret.txt").write_text("S")
    (other / "o.txt").write_text("O")
    (other / "ignored.txt").write_text("X")
    (other / "sub" / "d.txt").write_text("D")
    out = tmp_path / "out"
    args = ("--build-context", f"other={other}", "-o", f"type=local,dest={out}", str(main))
    r = run_pybuild(shared_root, "build", "--progress", "plain", *args)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (out / "fromother").iterdir()) == [
        ".dockerignore", "o.txt", "secret.txt", "sub"]
    assert (out / "fromother" / "o.txt").stat().st_uid == 0
    assert sorted(str(p.relative_to(out / "par")) for p in (out / "par").rglob("*")) == [
        "sub", "sub/d.txt"]
    assert (out / "mounted").read_text() == "O"
    assert "ignored.txt" not in (out / "mntlist").read_text().split()
    assert "secret.txt" in (out / "mntlist").read_text().split()

    def build() -> list[str]:
        started, _ = _build(shared_root, main, "--build-context", f"other={other}")
        return started

    assert build() == []  # everything cached
    (other / "ignored.txt").write_text("changed")  # ignored: the cache still holds
    assert build() == []
    (other / "o.txt").write_text("O2")  # read by both COPY . and the RUN mount
    started = build()
    assert any("COPY --from=other ." in s for s in started)
    assert any("RUN --mount" in s for s in started)
    assert not any("--parents" in s for s in started)  # it reads only sub/d.txt


def test_named_oci_layout_context(pybuild: PybuildRunner, base_layout: Path,
                                  tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Dockerfile").write_text("FROM busybox\nRUN echo fromlayout > /marker\n")
    r = pybuild("build", "-q", "-t", "named-layout-src:1", str(src))
    assert r.code == 0, r.err
    layout = tmp_path / "layout"
    r = pybuild("export", "named-layout-src:1", "-o", f"type=oci,dest={layout},tar=false")
    assert r.code == 0, r.err
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]

    # A fresh root has busybox but not this image: it comes from the layout.
    base = traversable_dir("pybuild-test-")
    try:
        root = base / "root"
        _import_base(root, base_layout)
        use = tmp_path / "use"
        use.mkdir()
        (use / "Dockerfile").write_text("FROM busybox\nCOPY --from=lay /marker /copied\n"
                                        "FROM lay\nCOPY --from=0 /copied /again\n")
        out = tmp_path / "out"
        r = run_pybuild(root, "build", "--build-context",
                        f"lay=oci-layout://{layout}@{digest}", "-o",
                        f"type=local,dest={out}", str(use))
        assert r.code == 0, r.err
        assert (out / "again").read_text() == "fromlayout\n"
        assert (out / "marker").read_text() == "fromlayout\n"  # FROM lay: its layers
        assert Root(root).content.has(Digest(digest))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_oci_layout_source_imports_blobs(pybuild: PybuildRunner, base_layout: Path,
                                         tmp_path: Path) -> None:
    """The solver imports the layout itself when the store lacks the image (a memoized
    frontend result never ran the resolver)."""
    from pybuild.content.store import ContentStore

    index = json.loads((base_layout / "index.json").read_text())
    top = index["manifests"][0]
    store = ContentStore(tmp_path / "content")
    handler = SourceHandler(SimpleNamespace(store=store))  # type: ignore[arg-type]
    op = SourceOp(identifier=f"oci-layout://{base_layout}@{top['digest']}",
                  attrs=(("platform", "linux/arm64"),))
    desc, ref = handler._import_layout(op)
    assert ref.startswith("oci-layout://")
    assert store.has(desc.digest) and desc.digest != Digest(top["digest"])
    manifest = json.loads(store.read(desc.digest, what="manifest"))
    assert all(store.has(Digest(x["digest"])) for x in manifest["layers"])

"""Tiny base images for tests that need one but not busybox (solver tests on the fake).

`put_image(stores, "base:1", {"/etc/passwd": "root:x:0:0::/:/bin/sh\\n"})` puts a
one-layer image of the host's platform into a pybuild root's stores, imported through
the OCI layout reader like any image (blobs verified), in a few milliseconds.
"""

from __future__ import annotations

import io
import json
import posixpath
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pybuild.digest import Digest
from pybuild.layers.tarwriter import LayerWriter
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform, host
from pybuild.root import Root
from pybuild.testimages.busybox import import_into_store

DEFAULT_FILES: Mapping[str, bytes | str] = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "/etc/group": "root:x:0:\n",
}


def layer_tar(files: Mapping[str, bytes | str], mtime: int = 0) -> bytes:
    """An uncompressed layer holding `files` (and their parent dirs), sorted."""
    entries: dict[str, bytes | None] = {}
    for path, data in files.items():
        path = posixpath.normpath("/" + path.lstrip("/"))
        parent = posixpath.dirname(path)
        while parent != "/":
            entries.setdefault(parent, None)
            parent = posixpath.dirname(parent)
        entries[path] = data.encode() if isinstance(data, str) else data
    buf = io.BytesIO()
    writer = LayerWriter(buf)
    for path in sorted(entries, key=lambda p: p.split("/")):
        data = entries[path]
        if data is None:
            writer.add_dir(path.lstrip("/"), mtime=mtime)
        else:
            writer.add_bytes(path.lstrip("/"), data, mtime=mtime)
    writer.close()
    return buf.getvalue()


def put_image(stores: Root, name: str, files: Mapping[str, bytes | str] = DEFAULT_FILES,
              *, env: tuple[str, ...] = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",),
              platforms: tuple[Platform, ...] = ()) -> Descriptor:
    """A one-layer image of `files`, named `name` in `stores`: for the host platform, or
    an index of one such image per platform in `platforms` (the file content is the same,
    the configs differ)."""
    tar = layer_tar(files)
    with tempfile.TemporaryDirectory(prefix="pybuild-image-") as tmp:
        layout = Path(tmp)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put(data: bytes, media_type: str) -> dict[str, object]:
            digest = Digest.from_bytes(data)
            (blobs / digest.hex).write_bytes(data)
            return {"mediaType": media_type, "digest": str(digest), "size": len(data)}

        def manifest(platform: Platform) -> dict[str, object]:
            config = json.dumps({
                "architecture": platform.architecture, "os": platform.os,
                **({"variant": platform.variant} if platform.variant else {}),
                "created": "2000-01-01T00:00:00Z", "config": {"Env": list(env)},
                "rootfs": {"type": "layers", "diff_ids": [str(Digest.from_bytes(tar))]},
                "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "tests.support"}],
            }).encode()
            data = json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": put(config, "application/vnd.oci.image.config.v1+json"),
                "layers": [put(tar, "application/vnd.oci.image.layer.v1.tar")],
            }).encode()
            return put(data, "application/vnd.oci.image.manifest.v1+json")

        if platforms:
            children = [{**manifest(p), "platform": p.to_json()} for p in platforms]
            inner = json.dumps({"schemaVersion": 2,
                                "mediaType": "application/vnd.oci.image.index.v1+json",
                                "manifests": children}).encode()
            top = [put(inner, "application/vnd.oci.image.index.v1+json")]
        else:
            top = [manifest(host())]
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": top}
        (layout / "index.json").write_text(json.dumps(index))
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        return import_into_store(stores.content, stores.images, layout, name=name)

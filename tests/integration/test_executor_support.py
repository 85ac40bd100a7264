"""Helpers shared by the test_executor_* suites (no tests here).

Builds go through the CLI (`run_pybuild`) or through `api_build`, a subprocess that builds
with the Python API (`pybuild.api.Builder.build`), as an embedder would.
Layers are read straight from an exported OCI layout, so tests see exactly what a layer
tar contains (whiteouts, opaque markers, owners, links, xattrs). `craft_image` writes an
OCI layout with busybox's config and any layers and diff_ids (true or not)."""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pybuild.digest import Digest
from tests.integration.conftest import REPO, Run, run_pybuild


def write_context(ctx: Path, dockerfile: str, files: dict[str, str | bytes] | None = None) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    ctx.chmod(0o755)
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, data in (files or {}).items():
        p = ctx / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
    return ctx


def api_build(root: Path, ctx: Path, *, user: str | None = None,
              env: dict[str, str] | None = None, timeout: float = 300,
              **request: object) -> Run:
    """`Builder(root).build(BuildRequest(context=ctx, **request))` in a subprocess; plain
    progress on stderr, exit code 1 on a PybuildError (rendered by the CLI renderer).
    `secrets` are [id, "file" | "env", path or variable]; `ssh` [id, socket]."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from pybuild.api import BuildRequest, Builder\n"
        "from pybuild.cli.render import PlainProgress, render_error\n"
        "from pybuild.errors import PybuildError\n"
        "from pybuild.request import Secret, SSHAgent\n"
        "kw = json.loads(sys.argv[2])\n"
        "kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)\n"
        "          if isinstance(v, list) else v) for k, v in kw.items()}\n"
        "kw['secrets'] = tuple(Secret.from_file(i, v) if kind == 'file' else\n"
        "                      Secret.from_env(i, v) for i, kind, v in kw.get('secrets', ()))\n"
        "kw['ssh'] = tuple(SSHAgent(id=i, socket=v) for i, v in kw.get('ssh', ()))\n"
        "try:\n"
        "    r = Builder(Path(sys.argv[1])).build(BuildRequest(**kw),\n"
        "                                         on_event=PlainProgress(sys.stderr))\n"
        "except PybuildError as exc:\n"
        "    render_error(exc, sys.stderr)\n"
        "    sys.exit(1)\n"
        "print(r.image.digest)\n"
    )
    cmd = [sys.executable, "-c", script, str(root), json.dumps({"context": str(ctx), **request})]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=full_env,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Entry:
    info: tarfile.TarInfo
    data: bytes


def image_layers(root: Path, image: str, tmp: Path, *, user: str | None = None
                 ) -> list[dict[str, Entry]]:
    """Every layer of `image` (bottom-up) as {path: entry}, from an exported OCI layout."""
    layout = tmp / f"layout-{image.replace(':', '-').replace('/', '-')}"
    r = run_pybuild(root, "export", image, "-o", f"type=oci,dest={layout},tar=false", user=user)
    assert r.code == 0, r.err
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
    if "manifests" in manifest:
        manifest = json.loads((blobs / manifest["manifests"][0]["digest"].split(":")[1])
                              .read_text())
    out = []
    for layer in manifest["layers"]:
        raw = (blobs / layer["digest"].split(":")[1]).read_bytes()
        if layer["mediaType"].endswith("gzip"):
            raw = gzip.decompress(raw)
        elif layer["mediaType"].endswith("zstd"):
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
        entries: dict[str, Entry] = {}
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            for info in tf.getmembers():
                data = b""
                if info.isfile():
                    f = tf.extractfile(info)
                    data = f.read() if f else b""
                entries[info.name.rstrip("/")] = Entry(info, data)
        out.append(entries)
    return out


def last_layer(root: Path, image: str, tmp: Path, *, user: str | None = None
               ) -> dict[str, Entry]:
    return image_layers(root, image, tmp, user=user)[-1]


def processes() -> list[str]:
    """Command lines of every process on the host."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except OSError:
            continue
    return out


EMPTY_TAR = b"\0" * 1024  # the empty layer (diff_id sha256:5f70bf18...)


def blob_path(layout: Path, digest: str) -> Path:
    """A blob of an OCI layout."""
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def host_manifest(layout: Path) -> tuple[dict, dict]:
    """The manifest and config of the host platform's image in a multi-arch layout."""
    index = json.loads((layout / "index.json").read_text())
    top = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_text())
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    desc = next(m for m in top["manifests"] if m["platform"]["architecture"] == arch)
    manifest = json.loads(blob_path(layout, desc["digest"]).read_text())
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_text())
    return manifest, config


def craft_image(base_layout: Path, dest: Path, name: str, layers: list[bytes],
                diff_ids: list[str]) -> Path:
    """An OCI layout with busybox's config, these gzip layer blobs and these diff_ids
    (what the config claims, true or not)."""
    _, config = host_manifest(base_layout)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = Digest.from_bytes(data)
        (blobs / digest.hex).write_bytes(data)
        return str(digest)

    config["rootfs"]["diff_ids"] = diff_ids
    config["history"] = [{"created_by": f"layer {i}"} for i in range(len(layers))]
    config_data = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config_data), "size": len(config_data)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(data), "size": len(data)} for data in layers],
    }
    manifest_data = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], "digest": put(manifest_data),
                            "size": len(manifest_data),
                            "annotations": {"org.opencontainers.image.ref.name": name}}]}
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def gzip_bytes(data: bytes) -> bytes:
    """`data` gzipped, reproducibly (no mtime)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def busybox_layer(base_layout: Path) -> tuple[bytes, str]:
    """The busybox layer blob of the host platform, and its diff_id."""
    manifest, config = host_manifest(base_layout)
    return blob_path(base_layout, manifest["layers"][0]["digest"]).read_bytes(), \
        config["rootfs"]["diff_ids"][0]


def with_file(blob: bytes, name: str, data: bytes) -> bytes:
    """The layer `blob` with one more file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return gzip_bytes(out.getvalue())

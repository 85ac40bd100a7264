"""Helpers shared by the test_executor_* suites (no tests here).

Builds go through the CLI (`run_pybuild`) or through `api_build`, a subprocess that builds
with the Python API (`pybuild.api.Builder.build`), as an embedder would.
Layers are read straight from an exported OCI layout, so tests see exactly what a layer
tar contains (whiteouts, opaque markers, owners, links, xattrs)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

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

"""Make a real Debian 12 base (mmdebstrap --variant=minbase) and the layers the SBOM tests scan.

    python testdata/make_debian.py [--out testdata/generated/debian]

Everything comes from the package registries (Debian's mirror, PyPI, npm), once: the results
are cached in OUT (outside the system temp dirs, so reused CI machines keep them) with a stamp
of the recipe, and rebuilt only when the recipe changes. The layers are:

    base.tar       the minbase root filesystem, as mmdebstrap writes it (a full layer)
    apt-layer.tar  what `--include=hello,tree` adds to it: the tar diff of a second
                   mmdebstrap run against the first (changed entries, whiteouts for removed
                   ones), as an image layer an `apt-get install` step would produce
    pip-layer.tar  `pip install --target /usr/local/lib/python3/dist-packages` of two wheels
    npm-layer.tar  `npm install --prefix /opt/app` of one package
    oci/           an OCI layout of the base alone (one gzip layer), named debian:bookworm

Both mmdebstrap runs share a .deb cache (OUT/debs), so the second downloads nothing but
the package lists. Tests import this module (`testdata.make_debian`).
"""

from __future__ import annotations

import contextlib
import copy as _copy
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pybuild.content.store import ContentStore  # noqa: E402
from pybuild.errors import UserError  # noqa: E402
from pybuild.layers.compress import CompressingWriter  # noqa: E402
from pybuild.layers.diff import write_tree  # noqa: E402
from pybuild.oci import mediatypes as mt  # noqa: E402
from pybuild.oci.config import DEFAULT_PATH, ContainerConfig, History, ImageConfig  # noqa: E402
from pybuild.oci.descriptor import Descriptor, Manifest  # noqa: E402
from pybuild.oci.platform import Platform  # noqa: E402
from pybuild.transports.oci_layout import write_layout  # noqa: E402

DEFAULT_OUT = REPO / "testdata" / "generated" / "debian"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
EPOCH = 1700000000  # SOURCE_DATE_EPOCH of the fixture: mmdebstrap's output is reproducible
APT_PACKAGES = ("hello", "tree")  # both depend on libc6 alone, which minbase has
PIP_PACKAGES = ("six==1.16.0", "idna==3.7")  # pure-Python wheels without dependencies
PIP_TARGET = "usr/local/lib/python3/dist-packages"
NPM_PACKAGES = ("ms@2.1.3",)  # no dependencies
NPM_PREFIX = "opt/app"
REF_NAME = "debian:bookworm"
# Bump when the recipe changes, so cached fixtures are rebuilt.
RECIPE_VERSION = "1"

SETUP_HINT = "install mmdebstrap (scripts/setup.sh does it) and allow access to Debian's mirror"


@dataclass(frozen=True, slots=True, kw_only=True)
class DebianFixture:
    root: Path
    base_tar: Path
    apt_layer: Path
    pip_layer: Path
    npm_layer: Path
    layout: Path
    seconds: float  # how long making (or finding) the fixture took

    @property
    def layers(self) -> tuple[Path, ...]:
        return (self.base_tar, self.apt_layer, self.pip_layer, self.npm_layer)


def _run(cmd: list[str], *, what: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> None:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd,
                          check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise UserError(f"{what} failed (exit {proc.returncode}): {tail}", hint=SETUP_HINT)


def mmdebstrap(out_tar: Path, *, debs: Path, include: tuple[str, ...] = ()) -> None:
    """A minbase rootfs as a tar at `out_tar`; .debs are shared through the `debs` dir."""
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise UserError("mmdebstrap is not installed", hint=SETUP_HINT)
    debs.mkdir(parents=True, exist_ok=True)
    cmd = [
        exe, "--variant=minbase", "--format=tar", "--quiet",
        "--aptopt=Acquire::Languages \"none\"",
        # The man page's recipe for a package cache kept outside the chroot.
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
    ]
    if include:
        cmd.append("--include=" + ",".join(include))
    cmd += [SUITE, str(out_tar), MIRROR]
    _run(cmd, what=f"mmdebstrap {' '.join(cmd[1:])}", env={"SOURCE_DATE_EPOCH": str(EPOCH)})


def _norm(name: str) -> str:
    name = name.removeprefix("./").rstrip("/")
    return name


def _entry_key(tar: tarfile.TarFile, info: tarfile.TarInfo) -> tuple[object, ...]:
    digest = ""
    if info.isreg():
        f = tar.extractfile(info)
        assert f is not None
        digest = hashlib.sha256(f.read()).hexdigest()
    return (info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname,
            info.devmajor, info.devminor, digest, tuple(sorted(info.pax_headers.items())))


def tar_diff(base: Path, full: Path, out: Path) -> None:
    """Write the layer that turns rootfs tar `base` into rootfs tar `full`: every entry of
    `full` that is new or differs (content, mode, owner, mtime), and a whiteout for every
    topmost entry of `base` that `full` lacks."""
    with tarfile.open(base) as tb:
        before = {_norm(i.name): _entry_key(tb, i) for i in tb}
    with tarfile.open(full) as tf_full, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tout:
        after: set[str] = set()
        for info in tf_full:
            name = _norm(info.name)
            after.add(name)
            if not name or before.get(name) == _entry_key(tf_full, info):
                continue
            copy = _copy.copy(info)
            copy.name = name
            if info.islnk():
                copy.linkname = _norm(info.linkname)
            if info.isreg():
                data = tf_full.extractfile(info)
                tout.addfile(copy, data)
            else:
                tout.addfile(copy)
        gone = sorted(n for n in before if n and n not in after)
        for name in gone:
            parent = name.rpartition("/")[0]
            if parent and parent not in after:
                continue  # a whiteout of the parent covers it
            head, _, base_name = name.rpartition("/")
            wh = tarfile.TarInfo(f"{head}/.wh.{base_name}" if head else f".wh.{base_name}")
            wh.mtime = EPOCH
            tout.addfile(wh, io.BytesIO(b""))


def _tree_layer(stage: Path, out: Path) -> None:
    with open(out, "wb") as f:
        write_tree(str(stage), f, mtime=EPOCH)


def pip_layer(out: Path, work: Path) -> None:
    stage = work / "pip"
    target = stage / PIP_TARGET
    target.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
          "--no-cache-dir", "--only-binary=:all:", "--disable-pip-version-check",
          "--target", str(target), *PIP_PACKAGES], what="pip install --target")
    _tree_layer(stage, out)


def npm_layer(out: Path, work: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm is not installed", hint="apt-get install npm")
    stage = work / "npm"
    prefix = stage / NPM_PREFIX
    prefix.mkdir(parents=True)
    _run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
          "--no-update-notifier", "--save-exact", *NPM_PACKAGES],
         what="npm install", env={"npm_config_cache": str(work / "npm-cache")})
    _tree_layer(stage, out)


def base_layout(base_tar: Path, layout: Path, work: Path) -> None:
    """An OCI layout of the base rootfs: one gzip layer, linux/amd64, named REF_NAME."""
    store = ContentStore(work / "store")
    blob = io.BytesIO()
    sink = CompressingWriter(blob, "gzip")
    with open(base_tar, "rb") as f:
        while chunk := f.read(1 << 20):
            sink.write(chunk)
    result = sink.result()
    layer = blob.getvalue()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    platform = Platform(os="linux", architecture="amd64")
    config = ImageConfig(
        architecture=platform.architecture, os=platform.os, created=created,
        config=ContainerConfig(env=(f"PATH={DEFAULT_PATH}",), cmd=("bash",)),
        diff_ids=(result.diff_id,),
        history=(History(created=created,
                         created_by=f"mmdebstrap --variant=minbase {SUITE} {MIRROR}"),),
    ).encode()
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(media_type=mt.OCI_CONFIG, digest=store.write(config),
                          size=len(config)),
        layers=(Descriptor(media_type=mt.OCI_LAYER_GZIP, digest=store.write(layer),
                           size=len(layer)),),
    ).encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write(manifest),
                      size=len(manifest), platform=platform)
    staged = work / "layout"
    write_layout(store, desc, staged, names=(REF_NAME,))
    if layout.exists():
        shutil.rmtree(layout)
    os.replace(staged, layout)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise makers of one output dir (pytest-xdist workers ask concurrently)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _inputs() -> dict[str, object]:
    return {"recipe": RECIPE_VERSION, "suite": SUITE, "mirror": MIRROR, "epoch": EPOCH,
            "apt": list(APT_PACKAGES), "pip": list(PIP_PACKAGES), "npm": list(NPM_PACKAGES)}


def build_debian_fixture(out: Path = DEFAULT_OUT) -> DebianFixture:
    """The cached fixture in `out`, made first if it is missing or its recipe changed."""
    start = time.monotonic()
    out = out.absolute()
    fixture = DebianFixture(
        root=out, base_tar=out / "base.tar", apt_layer=out / "apt-layer.tar",
        pip_layer=out / "pip-layer.tar", npm_layer=out / "npm-layer.tar", layout=out / "oci",
        seconds=0.0,
    )
    stamp = out / "stamp.json"
    with _locked(out / ".lock"):
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(stamp.read_text()) == _inputs() and all(
                p.exists() for p in (*fixture.layers, fixture.layout / "index.json")
            ):
                return _timed(fixture, start)
        stamp.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=".work-") as tmp:
            work = Path(tmp)
            base, full = work / "base.tar", work / "full.tar"
            mmdebstrap(base, debs=out / "debs")
            mmdebstrap(full, debs=out / "debs", include=APT_PACKAGES)
            tar_diff(base, full, work / "apt-layer.tar")
            full.unlink()
            pip_layer(work / "pip-layer.tar", work)
            npm_layer(work / "npm-layer.tar", work)
            base_layout(base, fixture.layout, work)
            for name in ("base.tar", "apt-layer.tar", "pip-layer.tar", "npm-layer.tar"):
                os.replace(work / name, out / name)
        stamp.write_text(json.dumps(_inputs(), sort_keys=True))
    return _timed(fixture, start)


def _timed(fixture: DebianFixture, start: float) -> DebianFixture:
    from dataclasses import replace

    return replace(fixture, seconds=time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output (cache) dir")
    args = parser.parse_args(argv)
    try:
        fixture = build_debian_fixture(args.out)
    except UserError as exc:
        print(f"make_debian: {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return 1
    for layer in fixture.layers:
        print(f"{layer} ({layer.stat().st_size} bytes)")
    print(f"layout: {fixture.layout}  ({fixture.seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

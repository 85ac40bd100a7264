"""`--load`: hand an image from pybuild's store to podman or docker.

buildx's `--load` puts the result into `docker images`. pybuild keeps it in its own store
(as always) and also streams it into `podman load` or `docker load`: one docker archive
written straight into the engine's stdin (no temporary file), with uncompressed layers,
since compressing what the engine decompresses at once is wasted time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.exporters.base import ImageOptions
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform
    from pybuild.request import Engine
    from pybuild.root import Root

ENGINES = ("podman", "docker")  # the order `--load` (auto) looks for them


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedReport:
    engine: str  # "podman" or "docker"
    output: str  # what the engine said ("Loaded image: ...")


def find_engine(choice: Engine) -> tuple[str, str]:
    """(engine name, executable) for `--load[=choice]`."""
    if choice not in ("auto", *ENGINES):
        raise UserError(f"--load={choice}: unknown engine (use podman or docker, or --load "
                        "alone for the one installed)", code="bad-flag")
    wanted = ENGINES if choice == "auto" else (choice,)
    for name in wanted:
        path = shutil.which(name)
        if path is not None:
            return name, path
    if choice == "auto":
        raise UserError("--load: neither podman nor docker is installed, so there is no "
                        "engine to load the image into", code="no-engine",
                        hint="the image is in pybuild's store either way; install podman "
                             "or docker, or export it with -o type=docker,dest=FILE")
    raise UserError(f"--load={choice}: {choice} is not installed", code="no-engine",
                    hint="--load alone picks whichever of podman and docker is installed")


def _engine_id(path: str, image: str) -> str | None:
    """The engine's ID (config digest hex) of `image`, or None if it has no such image."""
    proc = subprocess.run([path, "image", "inspect", "--format", "{{.Id}}", image],
                          capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().removeprefix("sha256:") or None


def _already_there(path: str, image_id: str, names: tuple[str, ...]) -> str | None:
    """What the engine lacks: None if it has the image under every name (nothing to
    do), "tag" if it has the image but not every name, "load" otherwise."""
    hexid = image_id.removeprefix("sha256:")
    if names and all(_engine_id(path, n) == hexid for n in names):
        return None
    if _engine_id(path, hexid) == hexid:
        return "tag" if names else None
    return "load"


def load(root: Root, image: Descriptor, names: tuple[str, ...], *, engine: Engine = "auto",
         platform: Platform | None = None, image_id: str = "",
         options: ImageOptions | None = None) -> LoadedReport:
    """Stream `image` (in the store) into `<engine> load`, named `names`; `options`: what
    a `-o type=docker` without dest asks of the archive (media types, compression,
    annotations; layers stay uncompressed unless it says). When the engine already has
    the image (its ID, the config digest, is known to it), only the missing names are
    added (`<engine> tag`), or nothing is done."""
    from pybuild.exporters.base import DockerOutput, ImageOptions
    from pybuild.exporters.run import export

    name, path = find_engine(engine)
    if image_id:
        todo = _already_there(path, image_id, names)
        if todo is None:
            return LoadedReport(engine=name, output=f"{name} already has the image")
        if todo == "tag":
            tagged = subprocess.run([path, "tag", image_id.removeprefix("sha256:"), *names],
                                    capture_output=True, text=True, check=False,
                                    timeout=120)
            if tagged.returncode == 0:
                return LoadedReport(engine=name, output=f"tagged {', '.join(names)}")
    asked = options or ImageOptions()
    output = DockerOutput(dest=None, image=dataclasses.replace(
        asked, names=names, compression=asked.compression or "uncompressed"))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # The engine's output goes to files: a pipe it filled while we write its stdin
        # would stall both sides.
        proc = subprocess.Popen([path, "load"], stdin=subprocess.PIPE, stdout=out,
                                stderr=err)
        assert proc.stdin is not None
        failure: BaseException | None = None
        try:
            export(root.content, image, output, names=names, platform=platform,
                   stdout=cast(BinaryIO, proc.stdin), compression="uncompressed",
                   compression_memo=root.compression_memo)
        except BrokenPipeError as exc:  # the engine stopped reading: its message says why
            failure = exc
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait()
        out.seek(0)
        err.seek(0)
        said = out.read().decode(errors="replace").strip()
        complaint = err.read().decode(errors="replace").strip()
    if code != 0 or failure is not None:
        last = (complaint.splitlines() or said.splitlines() or [f"exit code {code}"])[-1]
        raise UserError(f"--load: `{name} load` failed: {last}", code="load-failed",
                        hint="the image is in pybuild's store; `pybuild export IMAGE -o "
                             "type=docker,dest=FILE` writes the same archive to a file")
    return LoadedReport(engine=name, output=said)

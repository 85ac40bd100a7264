"""What `Builder.build` does around the build itself, on the caller's side: every input
made local (remote and tar contexts, secrets given as pipes, `--ssh ID=KEYFILE` agents),
`-o type=docker` without dest turned into an engine load, and the files that report the
result (`--iidfile`, `--metadata-file`), written once the result is final."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.errors import UserError

if TYPE_CHECKING:
    import contextlib

    from pybuild.exporters.base import ImageOptions
    from pybuild.request import BuildRequest, BuildResult
    from pybuild.root import Root


def local_inputs(request: BuildRequest, root: Root) -> contextlib.AbstractContextManager[
        BuildRequest]:
    """The request with every input local (see `contexts`); a local directory context
    needs nothing, and loads nothing (start-up time)."""
    import contextlib

    context = request.context
    if (isinstance(context, str | Path) and os.path.isdir(context)
            and not str(request.dockerfile or "").startswith(("http://", "https://"))
            and all(nc.kind not in ("git", "http") for _, nc in request.named_contexts)):
        return contextlib.nullcontext(request)
    from pybuild import contexts

    return contexts.local_inputs(request, root)


def read_pipes(request: BuildRequest) -> BuildRequest:
    """Secrets given as pipes (`src=<(command)`) read once, before anything reads them."""
    if not any(s.file for s in request.secrets):
        return request
    from pybuild.job import read_pipe_secrets

    return read_pipe_secrets(request)


def ssh_agents(request: BuildRequest) -> contextlib.AbstractContextManager[BuildRequest]:
    """`--ssh ID=KEYFILE`: a private ssh-agent per id for the build (see `sshagents`)."""
    import contextlib

    if not any(a.keys for a in request.ssh):
        return contextlib.nullcontext(request)
    from pybuild.sshagents import key_agents

    return key_agents(request)


def engine_loads(request: BuildRequest) -> tuple[BuildRequest, ImageOptions | None]:
    """buildx: `-o type=docker` without dest loads the image into the engine (what
    `--load` is short for). The request with those outputs turned into `load`, and the
    options they give (their names, media types, compression, annotations)."""
    if not request.outputs:
        return request, None
    import dataclasses

    from pybuild.exporters.base import DockerOutput

    loads = [o for o in request.outputs if isinstance(o, DockerOutput) and o.dest is None]
    if not loads:
        return request, None
    names = tuple(dict.fromkeys(n for o in loads for n in o.image.names))
    shapes = {dataclasses.replace(o.image, names=()) for o in loads}
    if len(shapes) > 1:
        raise UserError("several -o type=docker outputs without dest load one image into "
                        "the engine, and they ask for it differently", code="bad-output",
                        hint="give one of them, or dest=FILE to the others")
    options = dataclasses.replace(loads[0].image, names=names)
    if options.rewrite_timestamp:
        raise UserError("-o type=docker without dest: rewrite-timestamp=true is not "
                        "supported for an engine load", code="unsupported-option",
                        hint="write the archive with dest=FILE and `podman load -i FILE`")
    from pybuild.exporters.convert import conversion

    conversion(options, output="type=docker", default_oci=False,  # checked before the build
               default_compression="uncompressed")
    others = tuple(o for o in request.outputs if not (isinstance(o, DockerOutput)
                                                      and o.dest is None))
    return dataclasses.replace(request, outputs=others,
                               load=request.load or "auto"), options


def check_engine(request: BuildRequest) -> None:
    """`--load` without podman or docker fails before the build, not after it."""
    if request.load is not None:
        from pybuild.engines import find_engine

        find_engine(request.load)


def without_result_files(request: BuildRequest) -> BuildRequest:
    """The request the build itself runs: `--iidfile` and `--metadata-file` are written
    once the result is final (after `--load`), by `write_result_files`."""
    if not (request.iidfile or request.metadata_file):
        return request
    import dataclasses

    return dataclasses.replace(request, iidfile="", metadata_file="")


def remove_stale_iidfile(iidfile: str) -> None:
    """As buildx: no image ID file from an earlier build is left if this one fails."""
    if iidfile:
        try:
            os.unlink(iidfile)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UserError(f"--iidfile {iidfile}: cannot remove the old file: "
                            f"{exc.strerror}") from None


def write_result_files(request: BuildRequest, result: BuildResult) -> None:
    import json

    for path, text in ((request.iidfile, str(result.image_id)),
                       (request.metadata_file,
                        json.dumps(result.metadata(warnings=request.metadata_warnings),
                                   indent=2))):
        if not path:
            continue
        try:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror} (the image was built: "
                            f"{result.image.digest})") from None

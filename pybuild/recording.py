"""Every build's durable record (see `pybuild.history`): what the request becomes in it, and
the secret values it must never contain."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pybuild.request import BuildRequest, BuildResult

if TYPE_CHECKING:
    from pybuild.exporters.base import OutputSpec
    from pybuild.history import BuildRecorder, HistoryOptions
    from pybuild.root import Root

_MAX_SECRET_FILE = 1 << 20


def start(root: Root, req: BuildRequest, options: HistoryOptions,
          environ: Mapping[str, str]) -> BuildRecorder:
    """Open the build's record (before anything is read, so that every error is in it)."""
    from pybuild.history import BuildRecorder, RequestSummary
    from pybuild.oci.platform import host

    recorder = BuildRecorder(root.path, options)
    context = os.path.abspath(str(req.context))
    summary = RequestSummary(
        name=os.path.basename(context.rstrip("/")) or context, context=context,
        dockerfile=str(req.dockerfile), target=req.target,
        platforms=tuple(str(p) for p in req.platforms) or (str(host()),),
        tags=req.tags, outputs=tuple(_output_text(o) for o in req.outputs),
        build_args=req.build_args, labels=req.labels,
        secrets=tuple(s.id for s in req.secrets), ssh=tuple(a.id for a in req.ssh),
        named_contexts=tuple((name, f"{nc.kind}:{nc.value}")
                             for name, nc in req.named_contexts),
        cache_from=tuple(o.text or o.where for o in req.cache_from),
        cache_to=tuple(o.text or o.where for o in req.cache_to),
        no_cache=req.no_cache, no_cache_filter=req.no_cache_filter, network=req.network,
        source_date_epoch=req.source_date_epoch)
    recorder.start(summary, redact_args=options.redact_build_args,
                   secret_values=secret_values(req, environ))
    return recorder


def secret_values(req: BuildRequest, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values of the build's secrets, to be masked wherever they would appear."""
    out = []
    for s in req.secrets:
        if s.data is not None:
            out.append(s.data.decode("utf-8", "replace"))
        elif s.env:
            if environ.get(s.env):
                out.append(environ[s.env])
        else:
            try:
                with open(s.file, "rb") as f:
                    out.append(f.read(_MAX_SECRET_FILE).decode("utf-8", "replace"))
            except OSError:
                continue  # the build reports it
    return tuple(v for v in out if v)


def outputs(result: BuildResult) -> dict[str, str]:
    meta = result.metadata()
    return {k: str(v) for k, v in meta.items() if isinstance(v, str)}


def _output_text(spec: OutputSpec) -> str:
    kind = type(spec).__name__.removesuffix("Output").lower()
    dest = getattr(spec, "dest", None)
    return f"type={kind}" + (f",dest={dest}" if dest else "")

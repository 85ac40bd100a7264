"""pybuild: a daemonless, rootless container image builder.

The public surface is what `__all__` lists; each name loads its module on first use (a
CLI start must not pay for the builder it may not need). See docs/api.md.

    import pybuild
    result = pybuild.Builder().build(pybuild.BuildRequest(context=".", tags=("app:1",)))
"""

from __future__ import annotations

__version__ = "0.1.0"
TYPE_CHECKING = False  # (not typing's: the CLI imports this package first thing)

# name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(("Builder", "BuildHistory", "parse_output", "parse_cache_option",
                     "parse_named_context", "registry_options"), "pybuild.api"),
    **dict.fromkeys(("BuildRequest", "BuildResult", "StepReport", "PushReport", "Secret",
                     "SSHAgent", "TarContext", "Ulimit"), "pybuild.request"),
    "Root": "pybuild.root",
    "Platform": "pybuild.oci.platform",
    "Descriptor": "pybuild.oci.descriptor",
    "ImageConfig": "pybuild.oci.config",
    **dict.fromkeys(("OutputSpec", "OCIOutput", "DockerOutput", "LocalOutput", "TarOutput",
                     "ImageOutput", "CacheOnlyOutput", "ImageOptions", "Annotation"),
                    "pybuild.exporters.base"),
    "ExportReport": "pybuild.exporters.run",
    **dict.fromkeys(("PrunePolicy", "PruneReport"), "pybuild.gc"),
    **dict.fromkeys(("Event", "EventSink", "Notice", "VertexStarted", "VertexCached",
                     "VertexLog", "VertexDone", "VertexMiss", "VertexFailed"),
                    "pybuild.builder.events"),
    **dict.fromkeys(("PybuildError", "UserError", "NotFoundError", "IntegrityError",
                     "StepFailedError", "DockerfileSyntaxError", "InternalError",
                     "SourceLocation"), "pybuild.errors"),
}

__all__ = [
    "Annotation",
    "BuildHistory",
    "BuildRequest",
    "BuildResult",
    "Builder",
    "CacheOnlyOutput",
    "Descriptor",
    "DockerOutput",
    "DockerfileSyntaxError",
    "Event",
    "EventSink",
    "ExportReport",
    "ImageConfig",
    "ImageOptions",
    "ImageOutput",
    "IntegrityError",
    "InternalError",
    "LocalOutput",
    "NotFoundError",
    "Notice",
    "OCIOutput",
    "OutputSpec",
    "Platform",
    "PrunePolicy",
    "PruneReport",
    "PushReport",
    "PybuildError",
    "Root",
    "SSHAgent",
    "Secret",
    "SourceLocation",
    "StepFailedError",
    "StepReport",
    "TarContext",
    "TarOutput",
    "Ulimit",
    "UserError",
    "VertexCached",
    "VertexDone",
    "VertexFailed",
    "VertexLog",
    "VertexMiss",
    "VertexStarted",
    "__version__",
    "parse_cache_option",
    "parse_named_context",
    "parse_output",
    "registry_options",
]


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pybuild' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from pybuild.api import (
        Builder,
        BuildHistory,
        parse_cache_option,
        parse_named_context,
        parse_output,
        registry_options,
    )
    from pybuild.builder.events import (
        Event,
        EventSink,
        Notice,
        VertexCached,
        VertexDone,
        VertexFailed,
        VertexLog,
        VertexMiss,
        VertexStarted,
    )
    from pybuild.errors import (
        DockerfileSyntaxError,
        IntegrityError,
        InternalError,
        NotFoundError,
        PybuildError,
        SourceLocation,
        StepFailedError,
        UserError,
    )
    from pybuild.exporters.base import (
        Annotation,
        CacheOnlyOutput,
        DockerOutput,
        ImageOptions,
        ImageOutput,
        LocalOutput,
        OCIOutput,
        OutputSpec,
        TarOutput,
    )
    from pybuild.exporters.run import ExportReport
    from pybuild.gc import PrunePolicy, PruneReport
    from pybuild.oci.config import ImageConfig
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform
    from pybuild.request import (
        BuildRequest,
        BuildResult,
        PushReport,
        Secret,
        SSHAgent,
        StepReport,
        TarContext,
        Ulimit,
    )
    from pybuild.root import Root

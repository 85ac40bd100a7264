"""The Python API, and the one surface the CLI builds on.

    builder = Builder()                           # the default root; opens nothing yet
    result = builder.build(BuildRequest(context="app", tags=("app:1",)), on_event=print)
    builder.export(result.image, OCIOutput(dest="app.tar"))

`Builder` (`api.builder`) runs builds and manages the store's images; `BuildHistory`
(`api.records`) reads the build records; `api.registries` logs in and out and runs
`imagetools`; `api.edge` turns the CLI's strings into the request's values. The other
names are the typed values those take and return, re-exported from where they live, so
that the CLI imports nothing below this package (an import-linter contract says so).
Each name loads its module on first use: a CLI start must not pay for the builder.
See docs/api.md.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (not typing's: the CLI's start imports this package)

# name -> (module, attribute; None: the module itself)
_HOME: dict[str, tuple[str, str | None]] = {
    "Builder": ("pybuild.api.builder", "Builder"),
    "BuildHistory": ("pybuild.api.records", "BuildHistory"),
    **{n: ("pybuild.api.edge", n) for n in (
        "parse_output", "parse_cache_option", "parse_named_context", "registry_options",
        "dockerfile_ast")},
    **{n: ("pybuild.api.registries", n) for n in (
        "login_target", "auth_locations", "stored_credentials", "credentials", "login",
        "logout", "imagetools_inspect", "imagetools_create")},
    # values and helpers from the layers below, for the CLI and embedders
    **{n: ("pybuild.builder.events", n) for n in (
        "CheckWarning", "Event", "EventSink", "Notice", "VertexCached", "VertexDone",
        "VertexFailed", "VertexLog", "VertexMiss", "VertexStarted", "discard")},
    **{n: ("pybuild.request", n) for n in ("BuildRequest", "BuildResult", "PushReport")},
    "Root": ("pybuild.root", "Root"),
    "UserError": ("pybuild.errors", "UserError"),
    "default_root": ("pybuild.content.paths", "default_root"),
    "Prestart": ("pybuild.startup", "Prestart"),
    **{n: ("pybuild.exporters.base", n) for n in ("Annotation", "annotation_of")},
    "NamedContext": ("pybuild.frontend.resolver", "NamedContext"),
    **{n: ("pybuild.frontend.subrequests", n) for n in ("LintReport", "Outline", "TargetList")},
    "subrequest_json": ("pybuild.frontend.subrequests", "dumps"),
    **{n: ("pybuild.calls", n) for n in ("CALLS", "CallFunc")},
    "PrunePolicy": ("pybuild.gc", "PrunePolicy"),
    "read_regular_file": ("pybuild.job", "read_regular_file"),
    **{n: ("pybuild.contexts", n) for n in ("Prefixed", "is_archive", "read_head")},
    **{n: ("pybuild.local_images", n) for n in ("ImageSummary", "parse_created", "image_id")},
    **{n: ("pybuild.registry", n) for n in ("RegistryOptions", "RegistryAuthError")},
    "descriptor_json": ("pybuild.registry.imagetools", "descriptor_json"),
    "history_text": ("pybuild.history.text", None),
}

__all__ = [
    "CALLS",
    "Annotation",
    "BuildHistory",
    "BuildRequest",
    "BuildResult",
    "Builder",
    "CallFunc",
    "CheckWarning",
    "Event",
    "EventSink",
    "ImageSummary",
    "LintReport",
    "NamedContext",
    "Notice",
    "Outline",
    "Prefixed",
    "Prestart",
    "PrunePolicy",
    "PushReport",
    "RegistryAuthError",
    "RegistryOptions",
    "Root",
    "TargetList",
    "UserError",
    "VertexCached",
    "VertexDone",
    "VertexFailed",
    "VertexLog",
    "VertexMiss",
    "VertexStarted",
    "annotation_of",
    "auth_locations",
    "credentials",
    "default_root",
    "descriptor_json",
    "discard",
    "dockerfile_ast",
    "history_text",
    "image_id",
    "imagetools_create",
    "imagetools_inspect",
    "is_archive",
    "login",
    "login_target",
    "logout",
    "parse_cache_option",
    "parse_created",
    "parse_named_context",
    "parse_output",
    "read_head",
    "read_regular_file",
    "registry_options",
    "stored_credentials",
    "subrequest_json",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pybuild.api' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(home[0])
    value = module if home[1] is None else getattr(module, home[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from pybuild.api.builder import Builder
    from pybuild.api.edge import (
        dockerfile_ast,
        parse_cache_option,
        parse_named_context,
        parse_output,
        registry_options,
    )
    from pybuild.api.records import BuildHistory
    from pybuild.api.registries import (
        auth_locations,
        credentials,
        imagetools_create,
        imagetools_inspect,
        login,
        login_target,
        logout,
        stored_credentials,
    )
    from pybuild.builder.events import (
        CheckWarning,
        Event,
        EventSink,
        Notice,
        VertexCached,
        VertexDone,
        VertexFailed,
        VertexLog,
        VertexMiss,
        VertexStarted,
        discard,
    )
    from pybuild.calls import CALLS, CallFunc
    from pybuild.content.paths import default_root
    from pybuild.contexts import Prefixed, is_archive, read_head
    from pybuild.errors import UserError
    from pybuild.exporters.base import Annotation, annotation_of
    from pybuild.frontend.resolver import NamedContext
    from pybuild.frontend.subrequests import LintReport, Outline, TargetList
    from pybuild.frontend.subrequests import dumps as subrequest_json
    from pybuild.gc import PrunePolicy
    from pybuild.history import text as history_text
    from pybuild.job import read_regular_file
    from pybuild.local_images import ImageSummary, image_id, parse_created
    from pybuild.registry import RegistryAuthError, RegistryOptions
    from pybuild.registry.imagetools import descriptor_json
    from pybuild.request import BuildRequest, BuildResult, PushReport
    from pybuild.root import Root
    from pybuild.startup import Prestart

"""Temporary re-export shim: the converter is `pybuild.frontend.dockerfile2llb`.

Only the names imported from here outside the frontend (api, cli, tests/unit/conftest)
are kept. The lead removes this module once those callers import from
`pybuild.frontend.dockerfile2llb.convert` / `.options` and `pybuild.frontend.resolver`.
"""

from __future__ import annotations

from pybuild.frontend.dockerfile2llb.convert import compile_dockerfile
from pybuild.frontend.dockerfile2llb.options import FrontendOptions, FrontendResult
from pybuild.frontend.resolver import ImageMetaResolver, NamedContext, ResolvedImage

__all__ = ["FrontendOptions", "FrontendResult", "ImageMetaResolver", "NamedContext",
           "ResolvedImage", "compile_dockerfile"]

"""The frontend's input and output values."""

from __future__ import annotations

from dataclasses import dataclass

from pybuild.frontend.resolver import NamedContext
from pybuild.frontend.results import BuildWarning
from pybuild.llb import Definition
from pybuild.oci.config import ImageConfig
from pybuild.oci.platform import Platform


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendOptions:
    dockerfile: bytes
    filename: str = "Dockerfile"
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platform: Platform | None = None  # target platform; None = the build platform
    build_platform: Platform | None = None  # None = host
    labels: tuple[tuple[str, str], ...] = ()
    dockerignore: tuple[str, ...] = ()  # patterns applied to the main context
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = "default"
    named_contexts: tuple[tuple[str, NamedContext], ...] = ()
    multi_platform: bool = False  # prefix progress names with the platform


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendResult:
    definition: Definition
    config: ImageConfig  # diff_ids are filled in by the exporter from the solved layers
    stage_name: str
    warnings: tuple[BuildWarning, ...] = ()
    # --build-arg names no ARG declared (Docker warns "[Warning] One or more build-args
    # [X] were not consumed"; see `unused_build_args_message`)
    unused_build_args: tuple[str, ...] = ()


def unused_build_args_message(names: tuple[str, ...]) -> str:
    """The classic builder's warning text for `FrontendResult.unused_build_args`."""
    return f"[Warning] One or more build-args [{' '.join(names)}] were not consumed"

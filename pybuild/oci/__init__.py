"""The image model: pure values and codecs (media types, platforms, descriptors, configs).

The names below load with their submodule on first use: importing one submodule (say
`pybuild.oci.mediatypes`, as the sandbox daemon does) must not build every model class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pybuild.oci.config import ContainerConfig, Healthcheck, History, ImageConfig
    from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob
    from pybuild.oci.platform import Platform
    from pybuild.oci.reference import Reference

_HOME = {
    "ContainerConfig": "config", "Healthcheck": "config", "History": "config",
    "ImageConfig": "config", "Descriptor": "descriptor", "Index": "descriptor",
    "Manifest": "descriptor", "verify_blob": "descriptor", "Platform": "platform",
    "Reference": "reference",
}

__all__ = [
    "ContainerConfig",
    "Descriptor",
    "Healthcheck",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "Reference",
    "verify_blob",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

"""The image model: pure values and codecs (media types, platforms, descriptors, configs)."""

from pybuild.oci.config import ContainerConfig, Healthcheck, History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Index, Manifest, verify_blob
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference

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

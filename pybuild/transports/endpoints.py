"""Moving an image between a location and the content store: one `match` per direction.

containers/image's copy engine in small: every format module reads into and writes from
the store, and this is the only place that knows which module serves which location.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.content.store import ContentStore
from pybuild.errors import NotFoundError, UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.transports.names import (
    DockerArchiveLocation,
    ImageLocation,
    ImportedImage,
    OCIArchiveLocation,
    OCILayoutLocation,
    RegistryLocation,
)

if TYPE_CHECKING:
    from pybuild.registry import RegistryOptions


def read_image(location: ImageLocation, store: ContentStore, *,
               platforms: Sequence[Platform] | None = None,
               registry: RegistryOptions | None = None) -> ImportedImage:
    """Import the image at `location` into `store`, verified; with the names it records.
    `platforms` narrows a registry pull (local formats bring what they hold)."""
    from pybuild.transports import docker_archive, oci_layout
    from pybuild.transports import registry as remote

    match location:
        case OCILayoutLocation(path=path):
            if not os.path.isdir(path):
                raise _not_there(path, "an OCI layout directory", "oci-archive:")
            return oci_layout.read_layout(path, store, name=location.name,
                                          digest=location.digest, index=location.index)
        case OCIArchiveLocation(path=path):
            if not os.path.isfile(path):
                raise _not_there(path, "an OCI archive file", "oci:")
            return oci_layout.read_layout(path, store, name=location.name,
                                          index=location.index)
        case DockerArchiveLocation(path=path):
            if not os.path.isfile(path):
                raise _not_there(path, "a docker archive file", None)
            return docker_archive.read_docker_archive(path, store, reference=location.reference,
                                                      index=location.index)
        case RegistryLocation():
            return remote.pull_image(location, store, platforms=platforms, options=registry)


def read_all(location: ImageLocation, store: ContentStore) -> list[ImportedImage]:
    """Every image a local location holds (`docker load` of an archive with several),
    each with the names it records; a registry location is one image."""
    from pybuild.transports import docker_archive, oci_layout

    match location:
        case (OCILayoutLocation(name=None, digest=None, index=None)
              | OCIArchiveLocation(name=None, index=None)):
            return oci_layout.read_all(location.path, store)
        case DockerArchiveLocation(path=path, reference=None, index=None):
            return docker_archive.read_all_docker_archive(path, store)
        case _:
            return [read_image(location, store)]


def write_image(store: ContentStore, descriptor: Descriptor, location: ImageLocation, *,
                platform: Platform | None = None,
                registry: RegistryOptions | None = None) -> Descriptor:
    """Write the image `descriptor` (in `store`) to `location`; returns the descriptor as
    written there (named, for layouts). A docker archive holds one platform: `platform`
    picks it from an index."""
    from pybuild.transports import docker_archive, oci_archive, oci_layout
    from pybuild.transports import registry as remote

    match location:
        case OCILayoutLocation(digest=None, index=None):
            return oci_layout.write_layout(store, descriptor, location.path,
                                           names=_named(location.name))
        case OCIArchiveLocation(index=None):
            return oci_archive.write_oci_archive(store, descriptor, location.path,
                                                 names=_named(location.name))
        case DockerArchiveLocation(index=None):
            tags = [location.reference.familiar] if location.reference is not None else []
            return docker_archive.write_docker_archive(store, descriptor, location.path,
                                                       repo_tags=tags, platform=platform)
        case RegistryLocation():
            remote.push_image(store, descriptor, location, options=registry)
            return descriptor
    raise UserError(f"cannot write to {location}: a digest or @index selects an image to "
                    "read, it does not name one to write", code="bad-location")


def _named(name: str | None) -> tuple[str, ...]:
    return (name,) if name is not None else ()


def location_of(path: str | os.PathLike[str]) -> ImageLocation:
    """What kind of image a bare path holds (`pybuild load -i PATH`): a directory is an
    OCI layout; a tar with manifest.json is a docker archive (which may be an OCI layout
    too: Docker 25+, pybuild's own), one with only oci-layout an OCI archive."""
    text = os.fspath(path)
    p = Path(text)
    if p.is_dir():
        return OCILayoutLocation(path=text)
    if not p.exists():
        raise NotFoundError(f"{text}: no such file or directory")
    try:
        with tarfile.open(p, mode="r:") as tar:
            names = {os.path.normpath(n).lstrip("/") for n in tar.getnames()}
    except tarfile.TarError as exc:
        raise UserError(f"{text} is not a tar archive ({exc})",
                        hint="pybuild loads OCI layouts (a directory or a tar) and docker "
                             "archives (`docker save`, `podman save`)") from None
    except OSError as exc:
        raise UserError(f"cannot read {text}: {exc.strerror}") from None
    if "manifest.json" in names:
        return DockerArchiveLocation(path=text)
    return OCIArchiveLocation(path=text)


def _not_there(path: str, what: str, other: str | None) -> UserError:
    if not os.path.exists(path):
        return NotFoundError(f"{path}: no such file or directory")
    hint = f"for the other form, write {other}{path}" if other else None
    return UserError(f"{path} is not {what}", hint=hint)

"""The `type=docker,dest=…` exporter, over the docker-archive transport."""

from __future__ import annotations

from pybuild.content.store import ContentStore
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.transports.destination import Dest

# moved to pybuild/transports/docker_archive.py; the lead removes this shim
from pybuild.transports.docker_archive import MANIFEST_FILE, write_docker_archive

__all__ = ["MANIFEST_FILE", "DockerArchiveExporter", "write_docker_archive"]


class DockerArchiveExporter:
    """The `type=docker,dest=…` exporter."""

    def __init__(
        self, dest: Dest, *, repo_tags: list[str], platform: Platform | None = None
    ) -> None:
        self.dest = dest
        self.repo_tags = repo_tags
        self.platform = platform

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        return write_docker_archive(
            store, descriptor, self.dest, repo_tags=self.repo_tags, platform=self.platform
        )

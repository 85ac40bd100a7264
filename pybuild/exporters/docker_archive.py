"""The `type=docker,dest=…` exporter, over the docker-archive transport."""

from __future__ import annotations

from collections.abc import Sequence

from pybuild.content.store import ContentStore
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.transports.destination import Dest
from pybuild.transports.docker_archive import write_docker_archive


class DockerArchiveExporter:
    """The `type=docker,dest=…` exporter: every name in RepoTags and index.json."""

    def __init__(self, dest: Dest, *, repo_tags: Sequence[str],
                 platform: Platform | None = None) -> None:
        self.dest = dest
        self.repo_tags = tuple(repo_tags)
        self.platform = platform

    def export(self, store: ContentStore, descriptor: Descriptor) -> Descriptor:
        return write_docker_archive(store, descriptor, self.dest, repo_tags=self.repo_tags,
                                    platform=self.platform)

"""What an exporter's conversion needs to know about the build that made the image (a
value of its own module: a build with no outputs makes one without importing the
exporters)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pybuild.digest import Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildFacts:
    """What a conversion needs to know about the build that made the image: its
    SOURCE_DATE_EPOCH, and per platform (`str(Platform)`) the diff_ids of its base image,
    whose layers `rewrite-timestamp` keeps (BuildKit's immutable base layers)."""

    epoch: int | None = None
    base_diff_ids: Mapping[str, tuple[Digest, ...]] = field(default_factory=dict)


NO_FACTS = BuildFacts()  # an image that was not just built (`export`, `--load`)

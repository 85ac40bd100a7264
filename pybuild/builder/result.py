"""What the solver produces: filesystems as stacks of stored layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pybuild.digest import Digest


def snapshot_name(diff_id: Digest | str) -> str:
    """The directory name of a layer's unpacked snapshot (short: overlayfs takes all the
    lowerdirs of a mount in one page of options)."""
    return str(diff_id).partition(":")[2][:24]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerRef:
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "diff_id": self.diff_id, "size": self.size,
                "media_type": self.media_type}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerRef:
        return cls(digest=Digest(d["digest"]), diff_id=Digest(d["diff_id"]), size=int(d["size"]),
                   media_type=str(d["media_type"]))

    @property
    def snapshot_name(self) -> str:
        return snapshot_name(self.diff_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Solved:
    """A filesystem: its layers bottom-up; None marks a step whose diff was empty."""

    layers: tuple[LayerRef | None, ...]
    created: float = 0.0
    context: bool = False  # the build context itself (only as a copy/mount source)

    def to_json(self) -> dict[str, Any]:
        return {"layers": [x.to_json() if x else None for x in self.layers],
                "created": self.created}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Solved:
        return cls(layers=tuple(LayerRef.from_json(x) if x else None for x in d["layers"]),
                   created=float(d.get("created", 0.0)))

    @property
    def real_layers(self) -> list[LayerRef]:
        return [x for x in self.layers if x is not None]

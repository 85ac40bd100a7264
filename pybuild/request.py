"""What a build is asked (`BuildRequest`) and what it gives back (`BuildResult`): typed
values; the CLI parses its strings into them once, at its edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pybuild.builder.remote_cache import CacheOption
    from pybuild.digest import Digest
    from pybuild.exporters.base import OutputSpec
    from pybuild.exporters.run import ExportReport
    from pybuild.frontend.resolver import NamedContext
    from pybuild.frontend.results import BuildWarning
    from pybuild.oci.config import ImageConfig
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform
    from pybuild.registry import RegistryOptions

Network = Literal["default", "none", "host"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A secret for `RUN --mount=type=secret,id=ID`: from a file, an environment variable
    (read when the build starts), or given bytes. Never stored anywhere."""

    id: str
    file: str = ""
    env: str = ""
    data: bytes | None = None

    def __post_init__(self) -> None:
        given = sum((bool(self.file), bool(self.env), self.data is not None))
        if not self.id or given != 1:
            raise ValueError("a Secret has an id and exactly one of file, env or data")

    def __repr__(self) -> str:  # never the value
        where = f"file={self.file!r}" if self.file else (
            f"env={self.env!r}" if self.env else "data=<hidden>")
        return f"Secret(id={self.id!r}, {where})"

    @classmethod
    def from_file(cls, id: str, path: str | Path) -> Secret:
        return cls(id=id, file=str(Path(path).expanduser()))

    @classmethod
    def from_env(cls, id: str, variable: str) -> Secret:
        return cls(id=id, env=variable)

    @classmethod
    def from_bytes(cls, id: str, data: bytes) -> Secret:
        return cls(id=id, data=data)


@dataclass(frozen=True, slots=True, kw_only=True)
class SSHAgent:
    """An SSH agent for `RUN --mount=type=ssh,id=ID`: an agent socket; none given means
    $SSH_AUTH_SOCK (read when the build starts)."""

    id: str = "default"
    socket: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRequest:
    context: str | Path
    dockerfile: str | Path = ""  # default: CONTEXT/Dockerfile (or dockerfile)
    tags: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platforms: tuple[Platform, ...] = ()  # () = the host's
    labels: tuple[tuple[str, str], ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: Network = "default"
    runtime: Literal["", "crun", "runc"] = ""  # "" = probe (crun, else runc)
    max_parallelism: int = 0  # RUN steps at once; 0 = 4 x the CPUs
    source_date_epoch: int | None = None
    outputs: tuple[OutputSpec, ...] = ()  # besides naming the result with `tags`
    compression: Literal["gzip", "zstd", "uncompressed"] = "gzip"  # of exported layers
    secrets: tuple[Secret, ...] = ()
    ssh: tuple[SSHAgent, ...] = ()
    named_contexts: tuple[tuple[str, NamedContext], ...] = ()
    registry: RegistryOptions | None = None  # credentials/TLS for pulls and pushes
    pull: bool = True  # pull base images missing from the store from their registry
    cache_from: tuple[CacheOption, ...] = ()
    cache_to: tuple[CacheOption, ...] = ()
    iidfile: str = ""  # write the image digest here
    metadata_file: str = ""  # write buildx's metadata JSON here
    metadata_warnings: bool = False  # put the build checks in it (buildx: BUILDX_METADATA_WARNINGS)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReport:
    """One step that ran: its name and why the cache could not be used."""

    name: str
    reason: str
    layer_seconds: float = 0.0  # diffing and storing its layer (RUN steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushReport:
    reference: str  # where it went, familiar form, without digest
    digest: Digest  # what the registry now has under it

    def __str__(self) -> str:
        return f"{self.reference}@{self.digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildResult:
    image: Descriptor  # manifest (one platform) or index, in the content store
    config: ImageConfig  # the (first) platform's config
    config_digest: Digest
    tags: tuple[str, ...] = ()  # the names given in the image store (familiar form)
    steps: tuple[StepReport, ...] = ()  # every step that ran, in the order they finished
    exports: tuple[ExportReport, ...] = ()
    pushed: tuple[PushReport, ...] = ()
    ref: str = ""  # the build's record in the history (`pybuild history inspect REF`)
    warnings: tuple[BuildWarning, ...] = ()  # the build checks the Dockerfile failed

    @property
    def executed(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def misses(self) -> dict[str, str]:
        return {s.name: s.reason for s in self.steps}

    def metadata(self, *, warnings: bool = False) -> dict[str, object]:
        """buildx's `--metadata-file` keys (plus pybuild's own); `warnings`: with the
        build checks, as buildx writes them (`client.VertexWarning`) when asked."""
        digest = self.pushed[0].digest if self.pushed else self.image.digest
        extra: dict[str, object] = {}
        if warnings and self.warnings:
            extra["buildx.build.warnings"] = [_vertex_warning(w) for w in self.warnings]
        return {**extra,
            "containerimage.digest": str(digest),
            "containerimage.config.digest": str(self.config_digest),
            "containerimage.descriptor": self.image.to_json(),
            "image.name": ",".join(self.tags),
            "buildx.build.ref": self.ref,
            "pybuild.steps.executed": list(self.executed),
            "pybuild.steps.not_cached_because": self.misses,
        }


def _vertex_warning(w: BuildWarning) -> dict[str, object]:
    """BuildKit's `client.VertexWarning` in JSON (its byte fields are base64)."""
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    out: dict[str, object] = {"level": 1, "short": b64(w.short)}
    if w.description:
        out["detail"] = [b64(w.description)]
    if w.url:
        out["url"] = w.url
    if w.filename:
        out["sourceInfo"] = {"filename": w.filename}
    if w.ranges:
        out["range"] = [{"start": {"line": r.start_line}, "end": {"line": r.end_line}}
                        for r in w.ranges]
    return out

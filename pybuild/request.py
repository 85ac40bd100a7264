"""What a build is asked (`BuildRequest`) and what it gives back (`BuildResult`): typed
values; the CLI parses its strings into them once, at its edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pybuild.builder.remote_cache import CacheOption
    from pybuild.digest import Digest
    from pybuild.exporters.base import Annotation, OutputSpec
    from pybuild.exporters.run import ExportReport
    from pybuild.frontend.resolver import NamedContext
    from pybuild.frontend.results import BuildWarning
    from pybuild.oci.config import ImageConfig
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform
    from pybuild.registry import RegistryOptions

Network = Literal["default", "none", "host"]
# When a base image is fetched from its registry (podman's --pull values; buildx's
# `--pull` is "always", `--pull=false` and no flag are "missing").
PullPolicy = Literal["missing", "always", "never"]
# Which container engine `--load` hands the image to ("auto": podman, else docker).
Engine = Literal["auto", "podman", "docker"]


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
        if not self.id or given > 1:
            raise ValueError("a Secret has an id and at most one of file, env or data")

    def __repr__(self) -> str:  # never the value
        where = f"file={self.file!r}" if self.file else (
            f"env={self.env!r}" if self.env else (
                "data=<hidden>" if self.data is not None else "env or file named by id"))
        return f"Secret(id={self.id!r}, {where})"

    @classmethod
    def from_id(cls, id: str) -> Secret:
        """BuildKit's `--secret id=NAME` without src or env: the environment variable
        NAME if it is set when the build starts, else the file NAME."""
        return cls(id=id)

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
    """An SSH agent for `RUN --mount=type=ssh,id=ID`: an agent socket, or private key
    files (`keys`: loaded into an ssh-agent of the build's own, started for the build and
    stopped after it, as buildx loads them into its own agent); neither means
    $SSH_AUTH_SOCK (read when the build starts)."""

    id: str = "default"
    socket: str = ""
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.socket and self.keys:
            raise ValueError("an SSHAgent has a socket or keys, not both")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TarContext:
    """A build context given as a tar stream (plain, gzip, bzip2 or xz), as `docker build -`
    reads it from stdin; zero bytes are an empty context. Read once, when the build
    starts."""

    stream: IO[bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ulimit:
    """`--ulimit NAME=SOFT[:HARD]` (docker's names: nofile, nproc, core, ...; -1 is
    unlimited)."""

    name: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRequest:
    # A directory; a git URL (`https://host/repo.git#ref:subdir`, `git@host:repo.git`,
    # `git://...`); an http(s) URL of a tarball or a Dockerfile; or a `TarContext`.
    context: str | Path | TarContext
    # Default: CONTEXT/Dockerfile (or dockerfile); an http(s) URL is downloaded. Relative
    # paths are from the working directory for a local context, else inside the context.
    dockerfile: str | Path = ""
    # The Dockerfile itself (`-f -`); `dockerfile` is then only the name messages use.
    dockerfile_data: bytes | None = None
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
    pull: PullPolicy = "missing"  # base images: from the store, else their registry
    cache_from: tuple[CacheOption, ...] = ()
    cache_to: tuple[CacheOption, ...] = ()
    iidfile: str = ""  # write the image ID (see BuildResult.image_id) here
    metadata_file: str = ""  # write buildx's metadata JSON here
    metadata_warnings: bool = False  # the build checks in it (buildx: BUILDX_METADATA_WARNINGS)
    load: Engine | None = None  # also load the result into podman or docker (--load)
    # --annotation: into the stored result and every image output (buildx adds them to
    # every output); an output's own annotation.* keys come after them.
    annotations: tuple[Annotation, ...] = ()
    # What RUN steps' containers get; the sandbox cannot honour these yet (refused).
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host HOST:IP
    shm_size: int | None = None  # --shm-size, bytes
    ulimits: tuple[Ulimit, ...] = ()


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
    descriptor: Descriptor | None = None  # the manifest (or index) pushed, when known

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
    loaded: tuple[str, ...] = ()  # the engines (podman, docker) the image was loaded into
    # The build's record in the history (`pybuild history inspect REF`; buildx.build.ref).
    ref: str = ""
    warnings: tuple[BuildWarning, ...] = ()  # the build checks the Dockerfile failed

    @property
    def executed(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def misses(self) -> dict[str, str]:
        return {s.name: s.reason for s in self.steps}

    @property
    def multi_platform(self) -> bool:
        return self.image.media_type in _INDEX_TYPES

    @property
    def digest(self) -> Digest:
        """The manifest (or index) digest: the registry's after a push, else the store's."""
        return self.pushed[0].digest if self.pushed else self.image.digest

    @property
    def image_id(self) -> Digest:
        """What `-q` prints and `--iidfile` holds, as buildx (`getImageID`): the config
        digest, which is the same in the store, in archives and in the registry (layer
        compression changes the manifest, never the config); for a multi-platform result,
        the index digest (the registry's after a push)."""
        return self.digest if self.multi_platform else self.config_digest

    def metadata(self, *, warnings: bool = False) -> dict[str, object]:
        """buildx's `--metadata-file` keys (BuildKit's exporter response, decoded as
        buildx writes it), plus pybuild's own; `warnings`: with the build checks, as
        buildx writes them (`client.VertexWarning`) when BUILDX_METADATA_WARNINGS asks."""
        pushed = self.pushed[0] if self.pushed else None
        descriptor = self.image.to_json()
        if not self.multi_platform:  # as BuildKit's exporters annotate it
            descriptor["annotations"] = {
                **descriptor.get("annotations", {}), "config.digest": str(self.config_digest),
                **({"org.opencontainers.image.created": self.config.created}
                   if self.config.created else {})}
        if pushed is not None:
            descriptor = (pushed.descriptor.to_json() if pushed.descriptor is not None else
                          {"mediaType": self.image.media_type, "digest": str(pushed.digest)})
        # buildx's `builder/node/ref` shape (CI actions split it); `pybuild history`
        # takes the ref part, or the whole.
        out: dict[str, object] = {"buildx.build.ref": f"pybuild/local/{self.ref}"
                                  if self.ref else ""}
        if not self.multi_platform:
            out["containerimage.config.digest"] = str(self.config_digest)
        out["containerimage.descriptor"] = descriptor
        out["containerimage.digest"] = str(self.digest)
        names = [_canonical(t) for t in self.tags] or [_canonical(p.reference)
                                                       for p in self.pushed]
        if names:
            out["image.name"] = ",".join(dict.fromkeys(names))
        if warnings and self.warnings:
            out["buildx.build.warnings"] = [_vertex_warning(w) for w in self.warnings]
        out["pybuild.steps.executed"] = list(self.executed)
        out["pybuild.steps.not_cached_because"] = self.misses
        return out


_INDEX_TYPES = frozenset({"application/vnd.oci.image.index.v1+json",
                          "application/vnd.docker.distribution.manifest.list.v2+json"})


def _canonical(name: str) -> str:
    from pybuild.oci.reference import Reference

    return str(Reference.parse(name))


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


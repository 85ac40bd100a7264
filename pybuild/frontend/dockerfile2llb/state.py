"""The converter's state: per stage (`DispatchState`) and per build (`DispatchContext`).

BuildKit's `dispatchState` and `dispatchContext` (convert.go). A stage moves through the
phases DECLARED -> RESOLVED (base image known) -> TRIGGERS_READY (ONBUILD triggers of its
base turned into commands) -> DISPATCHED (its ops are in the DAG); a stage that copies
from nothing but an image (`COPY --from=alpine`) is an IMPLICIT stage, one replaced by a
named context is NAMED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pybuild.errors import UserError
from pybuild.frontend.dockerfile2llb.lint import Linter
from pybuild.frontend.dockerfile2llb.options import FrontendOptions
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.resolver import ImageMetaResolver, NamedContext
from pybuild.frontend.results import BuildWarning
from pybuild.frontend.shell.lex import ShellLex
from pybuild.gocompat import has_invalid_utf8
from pybuild.llb import DefinitionBuilder, Input, Op, OpMetadata
from pybuild.oci.config import DEFAULT_PATH, ContainerConfig, History
from pybuild.oci.platform import Platform

if TYPE_CHECKING:
    from pybuild.context.patterns import PatternMatcher

EMPTY_IMAGE = "scratch"
CONTEXT_SOURCE = "local://context"


class Phase(enum.IntEnum):
    DECLARED = 0
    RESOLVED = 1
    TRIGGERS_READY = 2
    DISPATCHED = 3


StageKind = Literal["stage", "implicit", "named"]


class EnvList:
    """llb.EnvList: re-setting a key moves it to the end; lookups see the latest value."""

    __slots__ = ("items",)

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self.items: dict[str, str] = dict(items or {})

    def set(self, key: str, value: str) -> None:
        self.items.pop(key, None)
        self.items[key] = value

    def get(self, key: str) -> str | None:
        return self.items.get(key)

    def as_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.items.items()]

    def copy(self) -> EnvList:
        return EnvList(self.items)


@dataclass(slots=True)
class ImageState:
    """The mutable image config of a stage (dockerspec.DockerOCIImage)."""

    os: str = "linux"
    architecture: str = ""
    variant: str = ""
    os_version: str = ""
    author: str = ""
    created: str = ""
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: list[History] = field(default_factory=list)

    def clone(self) -> ImageState:
        return ImageState(self.os, self.architecture, self.variant, self.os_version,
                          self.author, self.created, self.config, list(self.history))

    def set(self, **changes: Any) -> None:
        self.config = replace(self.config, **changes)


def empty_image(p: Platform) -> ImageState:
    env = () if p.os == "windows" else (f"PATH={DEFAULT_PATH}",)
    return ImageState(os=p.os, architecture=p.architecture, variant=p.variant,
                      os_version=p.os_version, config=ContainerConfig(env=env, working_dir="/"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgInfo:
    """An ARG definition: its value, doc comment and where it is."""

    key: str
    value: str
    comment: str
    loc: Loc
    deps: frozenset[str] = frozenset()  # the args a meta ARG's default refers to


@dataclass(frozen=True, slots=True, kw_only=True)
class MountInfo:
    """A secret or SSH id a RUN mounts (the first mount of that id counts)."""

    required: bool
    loc: Loc


@dataclass(slots=True, kw_only=True)
class OutlineCapture:
    """What a stage declares and uses, for `--call=outline` (BuildKit's outlineCapture):
    copied from the global scope, or from the base stage, when the stage is declared."""

    all_args: dict[str, ArgInfo] = field(default_factory=dict)
    used_args: set[str] = field(default_factory=set)
    secrets: dict[str, MountInfo] = field(default_factory=dict)
    ssh: dict[str, MountInfo] = field(default_factory=dict)

    def clone(self) -> OutlineCapture:
        return OutlineCapture(all_args=dict(self.all_args), used_args=set(self.used_args),
                              secrets=dict(self.secrets), ssh=dict(self.ssh))

    def mark_all_used(self, keys: set[str], visited: set[str]) -> None:
        for k in list(keys):
            if k in visited:
                continue
            visited.add(k)
            info = self.all_args.get(k)
            if info is not None:
                self.mark_all_used(set(info.deps), visited)
            self.used_args.add(k)


@dataclass(slots=True, eq=False)
class Command:
    """An instruction of a stage with the stages it reads from (`COPY --from`,
    `RUN --mount from=`), one entry per source or mount (None: the build context)."""

    inst: ins.Instruction
    sources: list[DispatchState | None] = field(default_factory=list)
    on_build: bool = False


@dataclass(slots=True, eq=False)
class DispatchState:
    """One stage (BuildKit's dispatchState)."""

    base_name: str  # expanded (later normalized) FROM value, or the --from reference
    loc: Loc
    from_: ins.FromInstruction | None = None  # None for implicit image stages
    kind: StageKind = "stage"
    phase: Phase = Phase.DECLARED
    name: str = ""  # lower-cased stage name
    stage_name: str = ""  # for progress output: name, stage-N, or "" for a single stage
    raw: list[ins.Instruction] = field(default_factory=list)  # the stage's instructions
    commands: list[Command] = field(default_factory=list)
    base: DispatchState | None = None
    platform: Platform | None = None
    deps: list[tuple[DispatchState, ins.Instruction]] = field(default_factory=list)
    # llb state
    state: Input | None = None
    env: EnvList = field(default_factory=EnvList)
    dir: str = "/"
    user: str = ""
    # image + build args
    image: ImageState = field(default_factory=ImageState)
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    workdir_set: bool = False  # a WORKDIR of this Dockerfile set an absolute path
    trackers: dict[str, Loc] = field(default_factory=dict)  # CMD/ENTRYPOINT/HEALTHCHECK seen
    # progress labels: "[stage n/total]"
    cmd_total: int = 0
    cmd_index: int = 0
    cmd_is_onbuild: bool = False
    ignore_cache: bool = False
    outline: OutlineCapture = field(default_factory=OutlineCapture)

    @property
    def dispatched(self) -> bool:
        return self.phase is Phase.DISPATCHED

    def add_dep(self, dep: DispatchState, inst: ins.Instruction) -> None:
        if not any(d is dep for d, _ in self.deps):
            self.deps.append((dep, inst))


@dataclass(slots=True, eq=False)
class DispatchContext:
    """What every phase of one build shares (BuildKit's dispatchContext + dispatchOpt)."""

    opts: FrontendOptions
    resolver: ImageMetaResolver
    lex: ShellLex
    lint: Linter
    build_platform: Platform
    target_platform: Platform
    implicit_target: bool
    epoch: str
    dag: DefinitionBuilder = field(default_factory=DefinitionBuilder)
    build_args: dict[str, str] = field(default_factory=dict)
    named: dict[str, NamedContext] = field(default_factory=dict)
    global_args: EnvList = field(default_factory=EnvList)
    states: list[DispatchState] = field(default_factory=list)
    by_name: dict[str, DispatchState] = field(default_factory=dict)
    warnings: list[BuildWarning] = field(default_factory=list)
    context_input: Input | None = None
    multi_platform: bool = False
    all_stages: bool = False  # dispatch every stage (a check run without a target)
    outline: OutlineCapture = field(default_factory=OutlineCapture)  # the meta ARGs
    ignore: PatternMatcher | None = None  # .dockerignore, for CopyIgnoredFile
    consumed_args: set[str] = field(default_factory=set)  # build args an ARG declared

    def lint_for(self, inst: ins.Instruction) -> Linter:
        """The linter of one instruction: its `# check=` comment merged in."""
        return self.lint.for_comments(inst.comments)

    @property
    def escape(self) -> str:
        return self.lex.escape_token

    @property
    def cache_ns(self) -> str:
        return self.build_args.get("BUILDKIT_CACHE_MOUNT_NS", "")

    @property
    def hostname(self) -> str:
        return self.build_args.get("BUILDKIT_SANDBOX_HOSTNAME", "")

    def add(self, op: Op, meta: OpMetadata | None = None) -> Input:
        """Add an op. Like BuildKit, whose LLB is protobuf (proto3 strings must be valid
        UTF-8), an op or a step name holding bytes that are not UTF-8 is refused."""
        if meta is not None and has_invalid_utf8(meta.description):
            raise _invalid_utf8()
        try:
            return self.dag.add(op, meta)
        except UnicodeEncodeError:
            raise _invalid_utf8() from None

    def add_state(self, d: DispatchState) -> None:
        self.states.append(d)
        base = self.by_name.get(d.base_name)
        if base is not None and d.kind != "named":
            d.base = base
            d.outline = base.outline.clone()
        if d.name:
            self.by_name[d.name] = d


def _invalid_utf8() -> UserError:
    return UserError(
        "failed to marshal LLB definition: string field contains invalid UTF-8",
        code="invalid-utf8",
        hint="this instruction holds bytes that are not UTF-8 (BuildKit refuses them too): "
             "save the Dockerfile as UTF-8, or move the text into a file the build copies "
             "or into a RUN heredoc script that starts with #!")


def fail(loc: Loc, message: str, hint: str | None = None) -> UserError:
    return loc.error(message, hint=hint, cls=UserError)

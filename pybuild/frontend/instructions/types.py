"""Typed Dockerfile instructions (BuildKit's `instructions/commands.go`): frozen values.

Words are kept as written; variable expansion happens at dispatch, because it needs the
build state's environment at that point (see `dockerfile2llb/dispatch.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pybuild.frontend.instructions.loc import Loc


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValue:
    key: str
    value: str
    no_delim: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgDecl:
    key: str
    value: str | None  # raw default, expanded at dispatch
    comment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    loc: Loc
    name: str = ""  # the keyword as written (for casing lints)
    comments: tuple[str, ...] = ()  # the comment lines right above (`# check=` overrides)

    @property
    def keyword(self) -> str:
        return self.loc.keyword


@dataclass(frozen=True, slots=True, kw_only=True)
class FromInstruction(Instruction):
    image: str
    stage_name: str  # lower-cased; "" when unnamed
    platform: str
    as_word: str = ""
    comment: str = ""  # the doc comment: `# <name> <description>` above the FROM


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineFile:
    name: str
    data: str
    chomp: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInstruction(Instruction):
    cmd_line: tuple[str, ...]
    prepend_shell: bool
    files: tuple[InlineFile, ...] = ()
    mounts: tuple[str, ...] = ()
    network: str = "default"
    security: str = "sandbox"
    devices: tuple[str, ...] = ()
    flags_used: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CmdInstruction(Instruction):
    cmd_line: tuple[str, ...]
    prepend_shell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EntrypointInstruction(Instruction):
    cmd_line: tuple[str, ...] | None
    prepend_shell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceContent:
    """A heredoc used as a COPY/ADD source: a file called `path` holding `data`."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyInstruction(Instruction):
    sources: tuple[str, ...]
    dest: str
    contents: tuple[SourceContent, ...] = ()
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()
    # ADD only
    is_add: bool = False
    checksum: str = ""
    keep_git_dir: bool | None = None
    unpack: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvInstruction(Instruction):
    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelInstruction(Instruction):
    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgInstruction(Instruction):
    args: tuple[ArgDecl, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkdirInstruction(Instruction):
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInstruction(Instruction):
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposeInstruction(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeInstruction(Instruction):
    volumes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StopSignalInstruction(Instruction):
    signal: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellInstruction(Instruction):
    shell: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintainerInstruction(Instruction):
    maintainer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthcheckInstruction(Instruction):
    test: tuple[str, ...]
    interval: int = 0  # nanoseconds
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OnbuildInstruction(Instruction):
    expression: str


Command = (EnvInstruction | LabelInstruction | ArgInstruction | RunInstruction
           | CopyInstruction | WorkdirInstruction | UserInstruction | CmdInstruction
           | EntrypointInstruction | HealthcheckInstruction | ExposeInstruction
           | VolumeInstruction | StopSignalInstruction | ShellInstruction
           | MaintainerInstruction | OnbuildInstruction)

"""The builder's seams: small protocols for the parts the solver drives.

`Executor` runs a build's steps. The sandbox daemon is one implementation
(`pybuild.builder.executor.sandbox.SandboxExecutor`); the tests' is
`tests.support.fake_executor.FakeExecutor`. The step values it takes and the results it
gives are the sandbox's wire values (`pybuild.builder.executor.protocol`, which the
daemon imports and which must therefore stay light); they are re-exported here so that
the solver needs only this module. Values here are `Record`s too (frozen dataclasses
without their import cost: every build imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pybuild.builder.executor.protocol import (
    BindFromLowers,
    BindFromTar,
    CacheDir,
    CommitResult,
    CommitSpec,
    Compression,
    CopyFiles,
    ExecStep,
    FileAction,
    FileOpResult,
    FileStep,
    FromLowers,
    FromTar,
    LayerBlob,
    MakeDir,
    MakeFile,
    Owner,
    PathEntry,
    PathProbe,
    SecretFile,
    SSHSocket,
    StepMount,
    Tmpfs,
    snapshot_name,
)
from pybuild.builder.executor.record import Record, replace

__all__ = [
    "BindFromLowers",
    "BindFromTar",
    "CacheDir",
    "CommitResult",
    "CommitSpec",
    "Compression",
    "CopyFiles",
    "ExecStep",
    "Executor",
    "ExecutorCapabilities",
    "ExecutorNotice",
    "FileAction",
    "FileOpResult",
    "FileStep",
    "FromLowers",
    "FromTar",
    "LayerBlob",
    "LogSink",
    "MakeDir",
    "MakeFile",
    "Owner",
    "PathEntry",
    "PathProbe",
    "SSHProvider",
    "SSHSocket",
    "SecretFile",
    "SecretProvider",
    "StepMount",
    "StepOutcome",
    "Tmpfs",
    "replace",
    "snapshot_name",
]

LogSink = Callable[[str], None]


class ExecutorCapabilities(Record):
    """What an executor can do beyond running steps."""

    probe_path: bool = True  # answers `probe_path` (the context-layer shortcut asks it)
    networks: frozenset[str] = frozenset({"none", "host"})  # ExecStep.network values


class StepOutcome(Record):
    """How a RUN step ended. `runtime_error`: the runtime could not run the step at all
    (`exit_code` is the runtime's then); `layer`: the committed changes, when the step
    asked for a commit and exited 0."""

    exit_code: int
    runtime: str = ""  # what ran the step, for messages (e.g. "crun")
    runtime_error: str = ""
    layer: CommitResult | None = None


class ExecutorNotice(Record):
    """Something the build's user should know about the executor (its snapshotter, a
    runtime fallback); `level` is "info" or "warning"."""

    level: str
    text: str


class Executor(Protocol):
    """Runs a build's steps: unpacks layers into snapshots, runs RUN steps and file
    actions on overlays of snapshots, and commits the changes as layers.

    Snapshot dirs are named by the solver (`snapshot_name`) and passed as paths; `lowers`
    are always top first. An executor may start lazily: a fully cached build never needs
    one, and `start_soon` says one will probably be needed."""

    @property
    def capabilities(self) -> ExecutorCapabilities: ...

    @property
    def started(self) -> bool:
        """Up and answering (else there is nothing of this build's to clean up)."""
        ...

    def start_soon(self) -> None: ...

    async def unpack(self, layer: LayerBlob, dest: str) -> None:
        """Make the snapshot `dest` of `layer` unless it exists. The blob's digest and
        the tar's diff_id are verified first (IntegrityError: the image lies)."""
        ...

    async def run(self, step: ExecStep, *, on_log: LogSink) -> StepOutcome:
        """Run a RUN step (its output goes to `on_log`); with `step.commit`, commit its
        changes if it succeeds. Cancelling the call kills the step."""
        ...

    async def apply_files(self, step: FileStep) -> FileOpResult:
        """Apply file actions; `commit(step.step_dir, …)` then makes their layer."""
        ...

    async def commit(self, step_dir: str, spec: CommitSpec) -> CommitResult: ...

    async def probe_path(self, lowers: Sequence[str], path: str) -> PathProbe:
        """What the merged `lowers` hold along `path` (see `PathProbe`)."""
        ...

    async def remove(self, paths: Sequence[str]) -> None:
        """Remove trees the executor made (snapshots, step and scratch dirs)."""
        ...

    async def settle(self) -> None:
        """Wait for the executor's background work (e.g. early unpacks)."""
        ...

    def take_notices(self) -> list[ExecutorNotice]:
        """The notices since the last call."""
        ...


class SecretProvider(Protocol):
    """The build's secrets (`--secret`), asked for by id when a step mounts one; the
    caller reads files and the environment, the builder never does."""

    def get(self, secret_id: str) -> bytes | None:
        """The secret's bytes; None when the build has no secret of that id."""
        ...


class SSHProvider(Protocol):
    """The build's SSH agents (`--ssh`), by id: the agent socket a step's mount relays."""

    def socket(self, agent_id: str) -> str | None:
        """The agent socket's path; None when the build has no agent of that id."""
        ...

"""The sandbox daemon as the build's `Executor`: started lazily, spoken to over `rpc`."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pybuild.builder.executor import protocol as p
from pybuild.builder.executor.idmap import IdMap
from pybuild.builder.executor.record import replace
from pybuild.builder.executor.rpc import LogSink, SandboxClient
from pybuild.builder.executor.runtime import RuntimeSelector
from pybuild.builder.executor.spawn import DaemonProcess
from pybuild.builder.executor.ssh import SSHForwarder
from pybuild.builder.protocols import ExecutorCapabilities, ExecutorNotice, StepOutcome
from pybuild.errors import PybuildError

OnStart = Callable[[SandboxClient], Awaitable[None]]


class SandboxExecutor:
    """Runs a build's steps in its sandbox daemon, which it starts on the first request: a
    fully cached build needs none.

    `daemon`: a daemon process started early because the build will probably need it
    (then call `start_soon`); the requests it was sent early (`DaemonProcess.prefetch`)
    answer the first identical ones here. `workdir`: the build's scratch dir (owned by
    the sandbox's namespace), where the daemon picks its snapshotter in the background
    once it is up (off the first step's path, unless that was one of the early
    requests), and keeps the runtimes' state and the SSH relays. `on_start` runs once
    the daemon answers, before any request. `runtime`: the OCI runtime's path, "" to
    probe (remembered in `runtime_memo`, see `RuntimeSelector`)."""

    capabilities = ExecutorCapabilities()

    def __init__(self, idmap: IdMap, on_start: OnStart | None = None, *,
                 daemon: DaemonProcess | None = None, workdir: str = "", runtime: str = "",
                 runtime_memo: Path | None = None) -> None:
        self._idmap = idmap
        self._daemon = daemon
        self._workdir = workdir
        self._client: SandboxClient | None = None
        self._starting: asyncio.Task[SandboxClient] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._early_applies: dict[str, tuple[int, p.Apply]] = {}  # by dest
        self._on_start = on_start
        self._runtimes = RuntimeSelector(runtime, runtime_memo or Path(workdir, "runtime.json"),
                                         idmap_key=idmap.key)
        self._ssh = SSHForwarder()
        self._notices: list[ExecutorNotice] = []

    @property
    def started(self) -> bool:
        """Up and answering (a daemon that died answers nothing, not even clean-ups)."""
        return self._client is not None and self._client.alive

    def start_soon(self) -> None:
        """Begin starting the daemon now (it is needed soon); requests then wait for it."""
        if self._client is None and self._starting is None:
            self._starting = asyncio.ensure_future(self._start())

    async def _start(self) -> SandboxClient:
        daemon, self._daemon = self._daemon, None
        client = SandboxClient(self._idmap, daemon, on_notice=self._snapshotter_notice)
        try:
            await client.start()
        except BaseException:
            await client.close()
            raise
        early = client.early
        self._early_applies = {call.dest: (rid, call) for rid, call in early.items()
                               if isinstance(call, p.Apply)}
        self._client = client
        probes = [(rid, call) for rid, call in early.items()
                  if isinstance(call, p.ProbeSnapshotter)]
        for rid, call in probes:  # waited for by `settle`
            self._background.add(asyncio.ensure_future(client.early_result(rid, call)))
        if self._workdir and not probes:
            self._background.add(asyncio.ensure_future(
                client.call(p.ProbeSnapshotter(dir=self._workdir))))
        if self._on_start is not None:
            await self._on_start(client)
        return client

    async def _connected(self) -> SandboxClient:
        if self._client is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        assert self._client is not None
        return self._client

    def _snapshotter_notice(self, notice: p.SnapshotterNotice) -> None:
        level = "info" if notice.name == "overlay" or not notice.why else "warning"
        why = f" ({notice.why})" if notice.why else ""
        self._notices.append(ExecutorNotice(level=level, text=f"snapshotter: {notice.name}{why}"))

    # -- the Executor protocol ------------------------------------------------------------

    async def unpack(self, layer: p.LayerBlob, dest: str) -> None:
        if os.path.isdir(dest):
            return
        client = await self._connected()
        early = self._early_applies.pop(dest, None)
        if early is not None and early[1].layer == layer:
            # Unpacked while the frontend ran (see DaemonProcess.prefetch); a failure is
            # retried here so that it is reported like any other.
            with contextlib.suppress(PybuildError):
                await client.early_result(*early)
                return
        await client.call(p.Apply(layer=layer, dest=dest))

    async def run(self, step: p.ExecStep, *, on_log: LogSink) -> StepOutcome:
        client = await self._connected()
        extents = self._idmap.nested_extents()
        state_dir = os.path.join(self._workdir, "runtime-state")
        runtime, fallback = await self._runtimes.choose(
            client.call, os.path.join(self._workdir, "runtime-probe"), state_dir, extents)
        step = await self._with_relays(step)
        res = await client.call(p.Exec(step=step, runtime=runtime, fallback=fallback,
                                       id_extents=extents, state_dir=state_dir), on_log=on_log)
        if res.fell_back:
            self._runtimes.fell_back(res.runtime, res.fallback_reason)
        return StepOutcome(exit_code=res.exit_code, runtime=os.path.basename(res.runtime),
                           runtime_error=res.runtime_error, layer=res.commit)

    async def _with_relays(self, step: p.ExecStep) -> p.ExecStep:
        """The step with each SSH agent socket replaced by a relay in the scratch dir."""
        if not any(isinstance(m, p.SSHSocket) for m in step.mounts):
            return step
        owner = None
        if os.geteuid() == 0:  # the relay must be the namespace's (see SSHForwarder)
            owner = (self._idmap.uid_extents[0].outside, self._idmap.gid_extents[0].outside)
        mounts: list[p.StepMount] = []
        for m in step.mounts:
            if isinstance(m, p.SSHSocket):
                sock = await self._ssh.socket_for(m.socket, self._workdir, owner, uid=m.uid,
                                                  gid=m.gid, mode=m.mode)
                m = replace(m, socket=sock)
            mounts.append(m)
        return replace(step, mounts=tuple(mounts))

    async def apply_files(self, step: p.FileStep) -> p.FileOpResult:
        return await (await self._connected()).call(p.FileOp(step=step))

    async def commit(self, step_dir: str, spec: p.CommitSpec) -> p.CommitResult:
        return await (await self._connected()).call(p.Commit(step_dir=step_dir, spec=spec))

    async def probe_path(self, lowers: Sequence[str], path: str) -> p.PathProbe:
        client = await self._connected()
        return await client.call(p.ProbePath(lowers=tuple(lowers), path=path))

    async def remove(self, paths: Sequence[str]) -> None:
        await (await self._connected()).remove(paths)

    async def settle(self) -> None:
        """Wait for the background requests (their failures show again where they matter:
        a snapshotter that does not work fails the first step that needs it)."""
        while self._background:
            task = self._background.pop()
            with contextlib.suppress(Exception):
                await task

    def take_notices(self) -> list[ExecutorNotice]:
        out = self._notices + [ExecutorNotice(level="warning", text=n)
                               for n in self._runtimes.notices]
        self._notices = []
        self._runtimes.notices.clear()
        return out

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> SandboxExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        elif starting is not None and not starting.cancelled():
            starting.exception()  # a start nothing waited for failed: nothing needed it
        await self.settle()
        await self._ssh.close()
        if self._client is not None:
            await self._client.close()
        if self._daemon is not None:  # started early, never used
            daemon, self._daemon = self._daemon, None
            await asyncio.to_thread(daemon.discard)

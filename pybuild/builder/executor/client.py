"""The pybuild side of the sandbox daemon: start it in a user namespace, send it requests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from pybuild.builder.executor.idmap import IdMap, write_maps
from pybuild.errors import InternalError, UserError

LogSink = Callable[[str], None]


class SandboxError(UserError):
    code = "sandbox"


def find_runtime(preferred: str = "") -> str:
    """The OCI runtime to use: `preferred` if given, else crun, else runc."""
    names = [preferred] if preferred else ["crun", "runc"]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    if preferred:
        raise UserError(f"OCI runtime {preferred!r} is not installed",
                        hint=f"apt-get install {preferred}")
    raise UserError("no OCI runtime found: pybuild needs crun or runc",
                    hint="apt-get install crun runc")


class Sandbox:
    """One sandbox daemon per build. Use `async with Sandbox(idmap) as sb`."""

    def __init__(self, idmap: IdMap) -> None:
        self.idmap = idmap
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._logs: dict[int, LogSink] = {}
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYBUILD_PARENT_PID"] = str(os.getpid())
        # -S keeps start-up short; the package is found through sys.path of this process.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pybuild.builder.executor.sandboxd",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, limit=1 << 24,
        )
        self._proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        line = await proc.stdout.readline()
        if line.strip() != b"userns":
            raise SandboxError(await self._startup_failure("create a user namespace"))
        try:
            await asyncio.to_thread(write_maps, proc.pid, self.idmap)
        except (OSError, UserError) as exc:
            proc.kill()
            raise SandboxError(f"cannot map ids into the build's user namespace: {exc}",
                               hint="see README: what an unprivileged user needs") from None
        proc.stdin.write(b"mapped\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise SandboxError(await self._startup_failure("set up its namespaces"))
        self._reader = asyncio.create_task(self._read_loop())

    async def _startup_failure(self, what: str) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        err = (await self._proc.stderr.read()).decode(errors="replace").strip()
        last = err.splitlines()[-1] if err else "no output"
        return (f"the sandbox could not {what}: {last}. Unprivileged user namespaces must be "
                f"enabled (check: unshare --user --map-root-user true)")

    async def _read_loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            rid = msg.get("id", 0)
            event = msg.get("event")
            if event == "log":
                sink = self._logs.get(rid)
                if sink is not None:
                    sink(msg["data"])
                continue
            fut = self._waiters.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        err = b""
        if self._proc.stderr is not None:
            with contextlib.suppress(Exception):
                err = await self._proc.stderr.read()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(InternalError(
                    "the sandbox daemon exited unexpectedly: "
                    + (err.decode(errors="replace").strip()[-500:] or "no output")))
        self._waiters.clear()

    async def request(self, op: str, *, on_log: LogSink | None = None,
                      **params: Any) -> dict[str, Any]:
        if self._proc is None or self._proc.stdin is None:
            raise InternalError("sandbox is not running")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        if on_log is not None:
            self._logs[rid] = on_log
        data = json.dumps({"id": rid, "op": op, **params}).encode() + b"\n"
        try:
            async with self._write_lock:
                self._proc.stdin.write(data)
                await self._proc.stdin.drain()
            try:
                msg = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if op == "exec":
                    await self._cancel(rid)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(fut, 15)
                raise
        finally:
            self._logs.pop(rid, None)
            self._waiters.pop(rid, None)
        if msg["event"] == "error":
            if msg.get("user"):
                raise UserError(msg["error"], code=msg.get("code") or None)
            raise InternalError(f"sandbox {op} failed: {msg['error']}\n{msg.get('trace', '')}")
        return dict(msg["result"])

    async def _cancel(self, rid: int) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = json.dumps({"id": 0, "op": "cancel", "target": rid, "grace": 5}).encode()
        with contextlib.suppress(Exception):
            async with self._write_lock:
                self._proc.stdin.write(data + b"\n")
                await self._proc.stdin.drain()

    async def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        with contextlib.suppress(Exception):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


class LazySandbox:
    """Starts the sandbox daemon on the first request: a fully cached build needs none."""

    def __init__(self, idmap: IdMap, on_start: Callable[[Sandbox], Any] | None = None) -> None:
        self._idmap = idmap
        self._sandbox: Sandbox | None = None
        self._starting: asyncio.Task[Sandbox] | None = None
        self._on_start = on_start

    @property
    def started(self) -> bool:
        return self._sandbox is not None

    async def _start(self) -> Sandbox:
        sb = Sandbox(self._idmap)
        await sb.start()
        self._sandbox = sb
        if self._on_start is not None:
            await self._on_start(sb)
        return sb

    async def request(self, op: str, *, on_log: LogSink | None = None,
                      **params: Any) -> dict[str, Any]:
        if self._sandbox is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        assert self._sandbox is not None
        return await self._sandbox.request(op, on_log=on_log, **params)

    async def __aenter__(self) -> LazySandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        if self._sandbox is not None:
            await self._sandbox.close()

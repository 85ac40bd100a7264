"""The pybuild side of the sandbox daemon: start it in a user namespace, send it requests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pybuild.builder.executor.idmap import IdMap, write_maps
from pybuild.errors import InternalError, UserError

LogSink = Callable[[str], None]


class SandboxError(UserError):
    code = "sandbox"


RUNTIMES = ("crun", "runc")  # preference order when --runtime is not given


def find_runtime(preferred: str = "") -> str:
    """The OCI runtime asked for: the path of `preferred` if given; "" (probe in the
    sandbox, see `RuntimeSelector`) if not, once at least one runtime is installed."""
    names = [preferred] if preferred else list(RUNTIMES)
    for name in names:
        path = shutil.which(name)
        if path:
            return path if preferred else ""
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


class RuntimeSelector:
    """Which OCI runtime runs the steps of one build.

    `--runtime NAME` pins it. Otherwise the choice is probed once per pybuild root: a
    trivial container is run inside the sandbox with each installed runtime in preference
    order (crun, runc), and the first that works is remembered in `memo` (JSON). A step
    whose runtime fails at run time with a runtime-level error is retried with the other
    runtime, which then becomes the remembered choice."""

    def __init__(self, requested: str, memo: Path) -> None:
        self.requested = requested
        self.memo = memo
        self._lock = asyncio.Lock()
        self._choice: tuple[str, str] | None = None
        self.notices: list[str] = []

    def _installed(self) -> list[str]:
        return [p for p in (shutil.which(n) for n in RUNTIMES) if p]

    def _remembered(self) -> str:
        try:
            data = json.loads(self.memo.read_text())
        except (OSError, ValueError):
            return ""
        path = str(data.get("path", ""))
        return path if path in self._installed() else ""

    def _remember(self, path: str, why: str) -> None:
        tmp = self.memo.with_name(self.memo.name + f".tmp-{os.getpid()}")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"runtime": os.path.basename(path), "path": path,
                                       "why": why}) + "\n")
            os.replace(tmp, self.memo)

    async def choose(self, sandbox: LazySandbox, scratch: str, state_dir: str,
                     id_extents: list[dict[str, int]]) -> tuple[str, str]:
        """(runtime, fallback) paths; fallback is "" when --runtime pinned one."""
        if self.requested:
            return self.requested, ""
        async with self._lock:
            if self._choice is None:
                self._choice = await self._probe(sandbox, scratch, state_dir, id_extents)
            return self._choice

    async def _probe(self, sandbox: LazySandbox, scratch: str, state_dir: str,
                     id_extents: list[dict[str, int]]) -> tuple[str, str]:
        installed = self._installed()
        remembered = self._remembered()
        if remembered:
            others = [p for p in installed if p != remembered]
            return remembered, others[0] if others else ""
        errors: list[str] = []
        for i, path in enumerate(installed):
            res = await sandbox.request("probe_runtime", runtime=path,
                                        scratch=f"{scratch}-{i}", state_dir=state_dir,
                                        id_extents=id_extents)
            if res["ok"]:
                self._remember(path, "; ".join(errors) or "first choice")
                others = [p for p in installed if p != path]
                if errors:
                    self.notices.append(f"OCI runtime {os.path.basename(path)} chosen: "
                                        + "; ".join(errors))
                return path, others[0] if others else ""
            errors.append(f"{os.path.basename(path)} does not work here: {res['error']}")
        raise SandboxError("no OCI runtime works in the build sandbox: " + "; ".join(errors),
                           hint="try --runtime runc or --runtime crun; see README")

    def fell_back(self, used: str, why: str) -> None:
        """A step had to use the fallback runtime: prefer it from now on."""
        assert self._choice is not None
        primary, _ = self._choice
        if used == primary:
            return
        self._choice = (used, primary)
        self._remember(used, f"{os.path.basename(primary)} failed at run time: {why}")
        self.notices.append(f"OCI runtime {os.path.basename(primary)} failed ({why}); "
                            f"using {os.path.basename(used)} from now on")


class SSHForwarder:
    """`RUN --mount=type=ssh`: a unix socket in the build's scratch dir that relays every
    connection to the agent socket given with --ssh (BuildKit forwards the agent through
    its session the same way), so the step never needs access to the user's socket dir."""

    def __init__(self) -> None:
        self._servers: dict[str, tuple[asyncio.AbstractServer, str]] = {}
        self._lock = asyncio.Lock()

    async def socket_for(self, ssh_id: str, agent: str, directory: str,
                         owner: tuple[int, int] | None) -> str:
        async with self._lock:
            if ssh_id in self._servers:
                return self._servers[ssh_id][1]
            name = hashlib.sha256(ssh_id.encode()).hexdigest()[:12]
            path = os.path.join(directory, f"ssh-{name}.sock")

            async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    up_r, up_w = await asyncio.open_unix_connection(agent)
                except OSError:
                    writer.close()
                    return

                async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    try:
                        while data := await r.read(65536):
                            w.write(data)
                            await w.drain()
                    except OSError:
                        pass
                    finally:
                        with contextlib.suppress(Exception):
                            w.close()

                await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

            server = await asyncio.start_unix_server(relay, path=path)
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)
            self._servers[ssh_id] = (server, path)
            return path

    async def close(self) -> None:
        for server, path in self._servers.values():
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._servers.clear()


class LazySandbox:
    """Starts the sandbox daemon on the first request: a fully cached build needs none."""

    def __init__(self, idmap: IdMap, on_start: Callable[[Sandbox], Any] | None = None) -> None:
        self._idmap = idmap
        self._sandbox: Sandbox | None = None
        self._starting: asyncio.Task[Sandbox] | None = None
        self._on_start = on_start
        self.runtimes: RuntimeSelector | None = None
        self.ssh = SSHForwarder()
        self.notices: list[tuple[str, str]] = []  # (level, text) for the solver to report

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

    def start_soon(self) -> None:
        """Begin starting the daemon now (it is needed soon); requests then wait for it."""
        if self._sandbox is None and self._starting is None:
            self._starting = asyncio.ensure_future(self._start())

    async def request(self, op: str, *, on_log: LogSink | None = None,
                      **params: Any) -> dict[str, Any]:
        if self._sandbox is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        assert self._sandbox is not None
        result = await self._sandbox.request(op, on_log=on_log, **params)
        snap = result.pop("snapshotter", None)
        if snap is not None:
            level = "info" if snap["name"] == "overlay" or not snap["why"] else "warning"
            why = f" ({snap['why']})" if snap["why"] else ""
            self.notices.append((level, f"snapshotter: {snap['name']}{why}"))
        return result

    def runtime_selector(self, requested: str, memo: Path) -> RuntimeSelector:
        if self.runtimes is None:
            self.runtimes = RuntimeSelector(requested, memo)
        return self.runtimes

    def take_notices(self) -> list[tuple[str, str]]:
        out = list(self.notices)
        self.notices.clear()
        if self.runtimes is not None:
            out += [("warning", n) for n in self.runtimes.notices]
            self.runtimes.notices.clear()
        return out

    async def __aenter__(self) -> LazySandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        await self.ssh.close()
        if self._sandbox is not None:
            await self._sandbox.close()

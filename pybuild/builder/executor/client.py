"""The pybuild side of the sandbox daemon: start it in a user namespace, send it requests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pybuild.builder.executor.daemon import DaemonProcess
from pybuild.builder.executor.idmap import IdMap
from pybuild.errors import InternalError, PybuildError, UserError

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
    """One sandbox daemon per build. Use `async with Sandbox(idmap) as sb`; `daemon` is a
    daemon process started earlier (see `DaemonProcess`), else one is started here."""

    def __init__(self, idmap: IdMap, daemon: DaemonProcess | None = None) -> None:
        self.idmap = idmap
        self._daemon = daemon
        self._stdin: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._stderr: asyncio.StreamReader | None = None
        self._ids = daemon.ids if daemon is not None else itertools.count(1)
        self._early: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._logs: dict[int, LogSink] = {}
        self._reader: asyncio.Task[None] | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self._write_lock = asyncio.Lock()
        self._gone = ""  # why the daemon can answer no more requests

    @property
    def alive(self) -> bool:
        return self._stdin is not None and not self._gone

    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Wait for the daemon's handshake, then speak to it through the event loop. On
        failure the caller must still `close()`."""
        if self._daemon is None:
            self._daemon = DaemonProcess()
            self._ids = self._daemon.ids
        daemon = self._daemon
        daemon.handshake(self.idmap)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        def wake_from_thread() -> None:
            loop.call_soon_threadsafe(wake)

        daemon.when_ready(wake_from_thread)
        await ready
        failure = daemon.take_over()
        if failure is not None:
            raise SandboxError(failure[0], hint=failure[1] or None)
        proc = daemon.proc
        for rid in daemon.early:  # their replies are in the pipe already, or will be
            self._early[rid] = self._waiters[rid] = loop.create_future()
        self._stdout = asyncio.StreamReader(limit=1 << 24)
        self._stderr = asyncio.StreamReader()
        for reader, pipe in ((self._stdout, proc.stdout), (self._stderr, proc.stderr)):
            transport, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), pipe)
            self._transports.append(transport)
        wtransport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                             proc.stdin)
        self._transports.append(wtransport)
        self._stdin = asyncio.StreamWriter(wtransport, protocol, None, loop)
        self._reader = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self._stdout is not None
        while True:
            line = await self._stdout.readline()
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
        if self._stderr is not None:
            with contextlib.suppress(Exception):
                err = await self._stderr.read()
        # From now on requests fail at once: a request written meanwhile may even have
        # reached a dying daemon (its stdin can outlive its stdout), so it gets no reply.
        self._gone = ("the sandbox daemon exited unexpectedly: "
                      + (err.decode(errors="replace").strip()[-500:] or "no output"))
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(InternalError(self._gone))
        self._waiters.clear()

    async def request(self, op: str, *, on_log: LogSink | None = None,
                      **params: Any) -> dict[str, Any]:
        if self._stdin is None:
            raise InternalError("sandbox is not running")
        if self._gone:
            raise InternalError(self._gone)
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        if on_log is not None:
            self._logs[rid] = on_log
        data = json.dumps({"id": rid, "op": op, **params}).encode() + b"\n"
        try:
            async with self._write_lock:
                self._stdin.write(data)
                await self._stdin.drain()
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
        return self._result(op, msg)

    async def early_result(self, rid: int, op: str) -> dict[str, Any]:
        """The reply to a request the daemon got before this client took over."""
        fut = self._early.pop(rid)
        return self._result(op, await asyncio.shield(fut))

    @staticmethod
    def _result(op: str, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["event"] == "error":
            if msg.get("user"):
                raise UserError(msg["error"], code=msg.get("code") or None)
            raise InternalError(f"sandbox {op} failed: {msg['error']}\n{msg.get('trace', '')}")
        return dict(msg["result"])

    async def _cancel(self, rid: int) -> None:
        assert self._stdin is not None
        data = json.dumps({"id": 0, "op": "cancel", "target": rid, "grace": 5}).encode()
        with contextlib.suppress(Exception):
            async with self._write_lock:
                self._stdin.write(data + b"\n")
                await self._stdin.drain()

    async def close(self) -> None:
        daemon = self._daemon
        if daemon is None:
            return
        self._daemon = None
        if self._stdin is not None:
            # End of requests: the daemon stops what still runs and exits.
            with contextlib.suppress(Exception):
                self._stdin.close()
            self._stdin = None
        else:
            # It never got going: drop what was connected, reap closes the rest.
            daemon.kill()
            for transport in self._transports:
                transport.close()
            await asyncio.sleep(0)  # the transports close their pipes
            daemon.adopted = False
        try:
            await asyncio.to_thread(daemon.reap, 10)
        except TimeoutError:
            daemon.kill()
            await asyncio.to_thread(daemon.reap)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        for fut in self._early.values():  # replies nobody asked for (a daemon that died)
            if fut.done() and not fut.cancelled():
                fut.exception()


class RuntimeSelector:
    """Which OCI runtime runs the steps of one build.

    `--runtime NAME` pins it. Otherwise the choice is probed: a trivial container is run
    inside the sandbox with each installed runtime in preference order (crun, runc), and
    the first that works is remembered in `memo` (JSON, per pybuild root) and in a per-user
    cache (`host_memo`), keyed by what the answer depends on: the installed runtimes'
    binaries, the kernel and its boot, the user and the id map. A new root therefore
    probes only when one of these changed. A step whose runtime fails at run time with a
    runtime-level error is retried with the other runtime, which then becomes the
    remembered choice."""

    def __init__(self, requested: str, memo: Path, *, idmap_key: str = "",
                 host_memo: Path | None = None) -> None:
        self.requested = requested
        self.memo = memo
        self.host_memo = host_memo if host_memo is not None else _host_memo_path()
        self.idmap_key = idmap_key
        self._lock = asyncio.Lock()
        self._choice: tuple[str, str] | None = None
        self.notices: list[str] = []

    def _installed(self) -> list[str]:
        return [p for p in (shutil.which(n) for n in RUNTIMES) if p]

    def _remembered(self, installed: list[str]) -> str:
        try:
            data = json.loads(self.memo.read_text())
        except (OSError, ValueError):
            data = {}
        path = str(data.get("path", ""))
        if path in installed:
            return path
        entry = self._host_entries().get(self._fingerprint(installed), {})
        path = str(entry.get("path", ""))
        if path not in installed:
            return ""
        self._write_json(self.memo, {"runtime": os.path.basename(path), "path": path,
                                     "why": str(entry.get("why", ""))})
        return path

    def _remember(self, path: str, why: str) -> None:
        entry = {"runtime": os.path.basename(path), "path": path, "why": why}
        self._write_json(self.memo, entry)
        key = self._fingerprint(self._installed())
        entries = {k: v for k, v in self._host_entries().items() if k != key}
        entries[key] = entry
        # A few PATH and id-map variants at most; the oldest go first.
        self._write_json(self.host_memo, dict(list(entries.items())[-8:]))

    def _fingerprint(self, installed: list[str]) -> str:
        """What a probe's answer depends on."""
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()  # a reboot may change cgroups, sysctls, modules
        except OSError:
            boot = ""
        uname = os.uname()
        parts = [str(os.geteuid()), self.idmap_key, uname.release, uname.version, boot]
        for path in installed:
            try:
                st = os.stat(path)
            except OSError:
                continue
            parts.append(f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _host_entries(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.host_memo.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data) + "\n")
            os.replace(tmp, path)

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
        remembered = self._remembered(installed)
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
    """Starts the sandbox daemon on the first request: a fully cached build needs none.

    `daemon`: a daemon process started early because the build will probably need it
    (then call `start_soon`); the requests it was sent early (`DaemonProcess.prefetch`)
    answer the first identical ones here. `scratch`: a dir where, once the daemon is up,
    it picks its snapshotter in the background (off the first step's path), unless that
    was one of the early requests."""

    def __init__(self, idmap: IdMap, on_start: Callable[[Sandbox], Any] | None = None, *,
                 daemon: DaemonProcess | None = None, scratch: str = "") -> None:
        self._idmap = idmap
        self._daemon = daemon
        self._scratch = scratch
        self._sandbox: Sandbox | None = None
        self._starting: asyncio.Task[Sandbox] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._early_applies: dict[str, int] = {}  # dest -> id of an apply sent early
        self._on_start = on_start
        self.runtimes: RuntimeSelector | None = None
        self.ssh = SSHForwarder()
        self.notices: list[tuple[str, str]] = []  # (level, text) for the solver to report

    @property
    def started(self) -> bool:
        """Up and answering (a daemon that died answers nothing, not even clean-ups)."""
        return self._sandbox is not None and self._sandbox.alive

    async def _start(self) -> Sandbox:
        daemon, self._daemon = self._daemon, None
        sb = Sandbox(self._idmap, daemon)
        try:
            await sb.start()
        except BaseException:
            await sb.close()
            raise
        early = daemon.early if daemon is not None else {}
        self._early_applies = {params["dest"]: rid for rid, (op, params) in early.items()
                               if op == "apply"}
        self._sandbox = sb
        probes = [rid for rid, (op, _) in early.items() if op == "probe_snapshotter"]
        for rid in probes:  # for its notice
            self._background.add(asyncio.ensure_future(self._early_reply(rid,
                                                                         "probe_snapshotter")))
        if self._scratch and not probes:
            task = asyncio.ensure_future(self.request("probe_snapshotter", dir=self._scratch))
            self._background.add(task)
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
        early = self._early_applies.pop(params["dest"], None) if op == "apply" else None
        result: dict[str, Any] | None = None
        if early is not None:
            # Unpacked while the frontend ran (see DaemonProcess.prefetch); a failure is
            # retried here so that it is reported like any other.
            with contextlib.suppress(PybuildError):
                result = await self._sandbox.early_result(early, op)
        if result is None:
            result = await self._sandbox.request(op, on_log=on_log, **params)
        return self._noticed(result)

    async def _early_reply(self, rid: int, op: str) -> None:
        assert self._sandbox is not None
        self._noticed(await self._sandbox.early_result(rid, op))

    def _noticed(self, result: dict[str, Any]) -> dict[str, Any]:
        """The result, its snapshotter notice (the first result after the probe has one)
        kept for the solver to report."""
        snap = result.pop("snapshotter", None)
        if snap is not None:
            level = "info" if snap["name"] == "overlay" or not snap["why"] else "warning"
            why = f" ({snap['why']})" if snap["why"] else ""
            self.notices.append((level, f"snapshotter: {snap['name']}{why}"))
        return result

    async def settle(self) -> None:
        """Wait for the background requests (their failures show again where they matter:
        a snapshotter that does not work fails the first step that needs it)."""
        while self._background:
            task = self._background.pop()
            with contextlib.suppress(Exception):
                await task

    def runtime_selector(self, requested: str, memo: Path) -> RuntimeSelector:
        if self.runtimes is None:
            self.runtimes = RuntimeSelector(requested, memo, idmap_key=self._idmap.key)
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
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        elif starting is not None and not starting.cancelled():
            starting.exception()  # a start nothing waited for failed: nothing needed it
        await self.settle()
        await self.ssh.close()
        if self._sandbox is not None:
            await self._sandbox.close()
        if self._daemon is not None:  # started early, never used
            daemon, self._daemon = self._daemon, None
            await asyncio.to_thread(daemon.discard)


def _host_memo_path() -> Path:
    """The per-user cache of runtime probes: $XDG_CACHE_HOME/pybuild/runtime-probes.json."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pybuild" / "runtime-probes.json"

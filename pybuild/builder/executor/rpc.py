"""The client end of the sandbox daemon's pipe: typed calls over the event loop.

`SandboxClient` takes over a daemon process (`spawn.DaemonProcess`) once its handshake is
done, and sends it `Call`s; a reader task routes each reply to its caller (see
`protocol` for the order of replies). Failures come back as `Failure` replies and are
raised here as typed errors: the user's conditions as one line (the daemon's traceback
as a note, for --debug), bugs as `InternalError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pybuild.builder.executor import protocol as p
from pybuild.builder.executor.idmap import IdMap
from pybuild.builder.executor.spawn import DaemonProcess
from pybuild.errors import IntegrityError, InternalError, NotFoundError, UserError

LogSink = Callable[[str], None]
NoticeSink = Callable[[p.SnapshotterNotice], None]
R = TypeVar("R")


class SandboxError(UserError):
    """The sandbox cannot do what the build needs (it cannot start, a disk is full, a
    path is not accessible...)."""

    code = "sandbox"


_USER_ERRORS: dict[str, type[UserError]] = {
    "integrity": IntegrityError, "not-found": NotFoundError}
_HINTS = {
    "no-space": "free some disk space (`pybuild prune` removes unused cache and snapshots)",
    "permission-denied": "check the ownership and permissions of the pybuild root",
}


def raise_failure(call: p.Call[Any], failure: p.Failure) -> None:
    """Raise the error a `Failure` reply stands for."""
    if failure.user:
        cls = _USER_ERRORS.get(failure.code, SandboxError)
        exc: Exception = cls(failure.message, code=failure.code or None,
                             hint=_HINTS.get(failure.code))
    else:
        exc = InternalError(f"sandbox {type(call).__name__.lower()} failed: {failure.message}")
    if failure.trace:
        # A note, not a chained cause: callers re-raise with `from None`, and a traceback
        # (--debug) prints notes after the error.
        exc.add_note("in the sandbox daemon:\n" + failure.trace.rstrip())
    raise exc


class SandboxClient:
    """One sandbox daemon per build. Use `async with SandboxClient(idmap) as sb`; `daemon`
    is a daemon process started earlier (see `DaemonProcess`), else one is started here.
    `on_notice` receives the daemon's snapshotter notice."""

    def __init__(self, idmap: IdMap, daemon: DaemonProcess | None = None, *,
                 on_notice: NoticeSink | None = None) -> None:
        self.idmap = idmap
        self._daemon = daemon
        self._on_notice = on_notice
        self._stdin: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._stderr: asyncio.StreamReader | None = None
        self._ids = daemon.ids if daemon is not None else itertools.count(1)
        self._early: dict[int, asyncio.Future[p.Reply]] = {}
        self._waiters: dict[int, asyncio.Future[p.Reply]] = {}
        self._logs: dict[int, LogSink] = {}
        self._reader: asyncio.Task[None] | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self._write_lock = asyncio.Lock()
        self._gone = ""  # why the daemon can answer no more requests

    @property
    def alive(self) -> bool:
        return self._stdin is not None and not self._gone

    @property
    def early(self) -> dict[int, p.Call[Any]]:
        """The calls the daemon was sent before this client took over, by request id."""
        return dict(self._daemon.early) if self._daemon is not None else {}

    async def __aenter__(self) -> SandboxClient:
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
        why = ""
        while True:
            line = await self._stdout.readline()
            if not line:
                break
            try:
                msg = p.decode(line)
            except p.ProtocolError as exc:
                why = f"the sandbox daemon sent a bad reply ({exc})"
                break
            if not isinstance(msg, p.Reply):
                why = "the sandbox daemon sent a request"
                break
            body = msg.body
            if isinstance(body, p.Log):
                sink = self._logs.get(msg.id)
                if sink is not None:
                    sink(body.data)
                continue
            if isinstance(body, p.SnapshotterNotice):
                if self._on_notice is not None:
                    self._on_notice(body)
                continue
            fut = self._waiters.pop(msg.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        err = b""
        if self._stderr is not None and not why:
            with contextlib.suppress(Exception):
                err = await self._stderr.read()
        # From now on requests fail at once: a request written meanwhile may even have
        # reached a dying daemon (its stdin can outlive its stdout), so it gets no reply.
        self._gone = why or ("the sandbox daemon exited unexpectedly: "
                             + (err.decode(errors="replace").strip()[-500:] or "no output"))
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(InternalError(self._gone))
        self._waiters.clear()

    async def call(self, call: p.Call[R], *, on_log: LogSink | None = None) -> R:
        """Send `call` and wait for its result. Cancelling an `Exec` kills its step."""
        if self._stdin is None:
            raise InternalError("sandbox is not running")
        if self._gone:
            raise InternalError(self._gone)
        rid = next(self._ids)
        fut: asyncio.Future[p.Reply] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        if on_log is not None:
            self._logs[rid] = on_log
        data = p.encode(p.Request(id=rid, call=call))
        try:
            async with self._write_lock:
                self._stdin.write(data)
                await self._stdin.drain()
            try:
                reply = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if isinstance(call, p.Exec):
                    await self._cancel(rid)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(fut, 15)
                raise
        finally:
            self._logs.pop(rid, None)
            self._waiters.pop(rid, None)
        return result_of(call, reply)

    async def remove(self, paths: Sequence[str]) -> None:
        """Remove trees owned by the namespace's ids."""
        await self.call(p.Remove(paths=tuple(paths)))

    async def early_result(self, rid: int, call: p.Call[R]) -> R:
        """The result of `call`, which the daemon got (as `rid`) before this client took
        over."""
        fut = self._early.pop(rid)
        return result_of(call, await asyncio.shield(fut))

    async def _cancel(self, rid: int) -> None:
        assert self._stdin is not None
        data = p.encode(p.Request(id=0, call=p.Cancel(target=rid, grace=5)))
        with contextlib.suppress(Exception):
            async with self._write_lock:
                self._stdin.write(data)
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


def result_of(call: p.Call[R], reply: p.Reply) -> R:
    """The result in `reply` to `call`, or the error it carries."""
    body = reply.body
    if isinstance(body, p.Failure):
        raise_failure(call, body)
    expected = p.REPLY_TYPES[type(call)]
    if not isinstance(body, expected):
        raise InternalError(f"the sandbox answered {type(call).__name__} with a "
                            f"{type(body).__name__}")
    return body  # type: ignore[no-any-return]

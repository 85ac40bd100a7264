"""Starting the sandbox daemon: its process, and the handshake into its user namespace.

Light to import (no asyncio, no dataclasses) so that a build can start the daemon first
thing: the daemon's interpreter start-up and imports (~0.1 s) then overlap with pybuild's
own imports and the frontend. A thread answers the handshake as soon as the daemon asks
and sends the requests queued with `prefetch` (unpacking a base image while the frontend
still runs), all without the event loop. `rpc.SandboxClient` then takes the pipes over.
"""

from __future__ import annotations

import _thread
import itertools
import os
import sys
import time

TYPE_CHECKING = False  # (not typing's: the CLI imports this module before anything else)
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

    from pybuild.builder.executor.idmap import IdMap
    from pybuild.builder.executor.protocol import Call

MODULE = "pybuild.builder.executor.daemon"


class Process:
    """A child with its stdin, stdout and stderr on pipes (unbuffered), in its own process
    group. posix_spawn rather than subprocess, whose imports would delay the start by
    ~10 ms. Only fds 0-2 are passed on (as with close_fds). Its signal dispositions are
    inherited: the child is Python, which sets its own."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        actions: list[tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, r_in, 0), (os.POSIX_SPAWN_DUP2, w_out, 1),
            (os.POSIX_SPAWN_DUP2, w_err, 2)]
        try:
            fds = [int(name) for name in os.listdir("/proc/self/fd")]
        except OSError:  # no /proc: Python's own fds are not inheritable anyway
            fds = []
        for fd in fds:  # inherited fds marked inheritable
            try:
                if fd > 2 and os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                continue
        try:
            self.pid = os.posix_spawn(args[0], args, env, file_actions=actions, setpgroup=0)
        except BaseException:
            for fd in (w_in, r_out, r_err):
                os.close(fd)
            raise
        finally:
            for fd in (r_in, w_out, w_err):
                os.close(fd)
        self.stdin = open(w_in, "wb", buffering=0)  # noqa: SIM115 (closed by the owner)
        self.stdout = open(r_out, "rb", buffering=0)  # noqa: SIM115
        self.stderr = open(r_err, "rb", buffering=0)  # noqa: SIM115
        self.returncode: int | None = None
        self._lock = _thread.allocate_lock()  # waitpid and kill never race (pid reuse)

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; TimeoutError after `timeout` seconds. Wakes up as the child
        exits (a pidfd), so that a build's end does not wait for a polling interval."""
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                fd = os.pidfd_open(self.pid)
            except OSError:  # no pidfds here: poll
                ready = left != 0.0
                time.sleep(0.002 if left is None else min(0.002, left))
            else:
                try:
                    ready = bool(select.select([fd], [], [], left)[0])
                finally:
                    os.close(fd)
            if not ready:
                raise TimeoutError(f"process {self.pid} still runs after {timeout} s")
        return code

    def kill(self) -> None:
        import signal

        with self._lock:
            if self.returncode is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class DaemonProcess:
    """One sandbox daemon process, from its start to its exit: `handshake` maps its ids
    (in a thread); `rpc.SandboxClient` speaks to it once the handshake is over.

    Create it from a thread that lives as long as the daemon (the main thread): the
    daemon's parent-death signal fires when the thread that started it exits."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYBUILD_PARENT_PID"] = str(os.getpid())
        # -S skips site (and .pth processing): the package and its dependencies are found
        # through this process's sys.path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # In its own process group: Ctrl-C reaches only pybuild, which then cancels steps.
        self.proc = Process([sys.executable, "-S", "-m", MODULE], env)
        self.ids = itertools.count(1)  # request ids, shared with the client
        self.adopted = False  # the pipes belong to the event loop's transports now
        # Requests sent before the client took over, by id. Their replies wait in the pipe
        # for the client.
        self.early: dict[int, Call[Any]] = {}
        self._queued: list[bytes] = []
        self._failure: tuple[str, str] | None = None  # (message, hint) of a failed start
        self._ready = False
        self._done = False
        self._callbacks: list[Callable[[], None]] = []
        self._lock = _thread.allocate_lock()
        self._reaped = False
        self._thread: threading.Thread | None = None

    def handshake(self, idmap: IdMap) -> None:
        """Answer the daemon's handshake, with these ids, in a thread."""
        import threading

        if self._thread is None:
            self._thread = threading.Thread(target=self._handshake, args=(idmap,),
                                            name="pybuild-sandbox-start", daemon=True)
            self._thread.start()

    # -- handshake (in the thread) --------------------------------------------------------

    def _handshake(self, idmap: IdMap) -> None:
        try:
            failure = self._steps(idmap)
        except Exception as exc:  # reported when the daemon is first needed
            self.kill()
            failure = (f"the sandbox could not start: {exc}", "")
        with self._lock:
            self._failure = failure
            self._ready = failure is None
            queued, self._queued = self._queued, []
            if self._ready:
                self._write(b"".join(queued))
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except RuntimeError:  # the event loop is gone already
                pass

    def _steps(self, idmap: IdMap) -> tuple[str, str] | None:
        from pybuild.builder.executor.idmap import write_maps
        from pybuild.errors import UserError

        if self._readline() != b"userns":
            return self._failed("create a user namespace")
        try:
            write_maps(self.proc.pid, idmap)
        except (OSError, UserError) as exc:
            self.kill()
            return (f"cannot map ids into the build's user namespace: {exc}",
                    "see README: what an unprivileged user needs")
        if not self._write(b"mapped\n") or self._readline() != b"ready":
            return self._failed("set up its namespaces")
        return None

    def _readline(self) -> bytes:
        # The pipe is unbuffered (bufsize=0), so nothing past the line is consumed.
        return (self.proc.stdout.readline() or b"").strip()

    def _write(self, data: bytes) -> bool:
        try:
            while data:  # a raw pipe may take part of it
                data = data[self.proc.stdin.write(data) or 0:]
        except OSError:
            return False
        return True

    def _failed(self, what: str) -> tuple[str, str]:
        self.kill()
        err = self.proc.stderr.read().decode(errors="replace").strip()
        last = err.splitlines()[-1] if err else "no output"
        return (f"the sandbox could not {what}: {last}. Unprivileged user namespaces must be "
                f"enabled (check: unshare --user --map-root-user true)", "")

    # -- for the builder and the client -------------------------------------------------------

    def prefetch(self, call: Call[Any]) -> None:
        """Send a request as soon as the daemon is ready, before the client takes over
        (ignored after that: the client sends its own). Its reply goes to the client,
        which hands it to the first identical request (see `sandbox.SandboxExecutor`)."""
        from pybuild.builder.executor.protocol import Request, encode

        with self._lock:
            if self.adopted or (self._done and not self._ready):
                return
            rid = next(self.ids)
            self.early[rid] = call
            line = encode(Request(id=rid, call=call))
            if self._ready:
                self._write(line)
            else:
                self._queued.append(line)

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the handshake is over (at once, or from the thread)."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback()

    def take_over(self) -> tuple[str, str] | None:
        """For the client, once the handshake is over: the start-up failure (message,
        hint), or None and the pipes are the client's from now on."""
        with self._lock:
            if self._failure is None:
                self.adopted = True
            return self._failure

    def kill(self) -> None:
        self.proc.kill()

    def reap(self, timeout: float | None = None) -> None:
        """Wait for the daemon to exit (raises TimeoutError), then release everything it
        held. Idempotent."""
        if self._reaped:
            return
        self.proc.wait(timeout)
        if self._thread is not None:
            self._thread.join()
        if not self.adopted:
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                pipe.close()
        self._reaped = True

    def discard(self) -> None:
        """Stop a daemon that nothing uses (any more): kill it and reap it."""
        if not self._reaped:
            self.kill()
            self.reap()

"""The sandbox daemon's process: the `Daemon` object, its dispatch table, its main loop.

Each request runs in a thread of its own (steps run side by side) except `Cancel`, which
is handled at once; replies are written whole, one line each, under a lock. A failure is
answered with a `Failure`: the user's conditions (bad input, a full disk, a missing or
corrupt blob, EPERM) as one line naming the operation and the path, everything else as
an internal error with the daemon's traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TextIO

# Everything the daemon uses is imported now, before it enters its user namespace: the
# namespace's root may not be allowed to read the Python installation (e.g. under /root).
from pybuild.builder.executor import protocol as p
from pybuild.builder.executor.daemon import layers, namespaces
from pybuild.builder.executor.daemon import runtime as oci_runtime
from pybuild.builder.executor.daemon.cleanup import rmtree
from pybuild.builder.executor.daemon.fileop import run_fileop
from pybuild.builder.executor.daemon.rootfs import SnapshotterChoice
from pybuild.builder.executor.daemon.step import run_step
from pybuild.builder.executor.lowers import probe_path
from pybuild.errors import UserError

# errno -> the code of the user error it is (the client adds a hint for some).
_ERRNO_CODES = {
    errno.ENOSPC: "no-space", errno.EDQUOT: "no-space",
    errno.EPERM: "permission-denied", errno.EACCES: "permission-denied",
    errno.EROFS: "permission-denied", errno.ENOENT: "not-found",
}


def describe(call: p.Call[Any]) -> str:
    """What a request does, to name it in an error."""
    match call:
        case p.Apply():
            return f"unpacking layer {call.layer.digest} into {call.dest}"
        case p.Exec():
            return f"running the step in {call.step.step_dir}"
        case p.FileOp():
            return f"applying the file changes in {call.step.step_dir}"
        case p.Commit():
            return f"committing the changes of {call.step_dir} to {call.spec.out}"
        case p.Remove():
            return f"removing {', '.join(call.paths)}"
        case p.ProbePath():
            return f"looking up {call.path} in the image"
        case p.ProbeRuntime():
            return f"trying the OCI runtime {call.runtime}"
        case p.ProbeSnapshotter():
            return f"choosing a snapshotter in {call.dir}"
    return type(call).__name__.lower()


def failure(call: p.Call[Any], exc: BaseException) -> p.Failure:
    trace = traceback.format_exc()
    if isinstance(exc, UserError):
        return p.Failure(user=True, code=exc.code, message=exc.message, trace=trace)
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return p.Failure(user=True, code=_ERRNO_CODES.get(exc.errno or 0, "sandbox"),
                         message=f"{describe(call)} failed: {what}"
                                 + (f" ({where})" if where else ""),
                         trace=trace)
    return p.Failure(user=False, code="internal", message=f"{type(exc).__name__}: {exc}",
                     trace=trace)


class Daemon:
    """The daemon's state (its snapshotter, running containers, the runtimes' state
    dirs) and the handler of each request type."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._out_lock = threading.Lock()
        self.snapshotters = SnapshotterChoice()
        self.containers = oci_runtime.Containers()
        self.state_dirs = oci_runtime.StateDirs()
        self.handlers: dict[type[Any], Callable[[int, Any], Any]] = {
            p.Ping: self.ping,
            p.Apply: lambda rid, call: layers.apply(call),
            p.Remove: self.remove,
            p.Exec: self.exec,
            p.FileOp: self.fileop,
            p.Commit: lambda rid, call: layers.commit(call.step_dir, call.spec),
            p.Cancel: self.cancel,
            p.ProbeRuntime: lambda rid, call: oci_runtime.probe(call, self.state_dirs),
            p.ProbeSnapshotter: self.probe_snapshotter,
            p.ProbePath: lambda rid, call: probe_path(call.lowers, call.path),
        }

    def send(self, rid: int, body: Any) -> None:
        line = p.encode(p.Reply(id=rid, body=body)).decode()
        with self._out_lock:
            self._out.write(line)
            self._out.flush()

    def handle(self, req: p.Request) -> None:
        try:
            result = self.handlers[type(req.call)](req.id, req.call)
        except Exception as exc:  # answered; the client raises it as a typed error
            result = failure(req.call, exc)
        notice = self.snapshotters.take_notice()
        if notice is not None:
            self.send(req.id, notice)
        self.send(req.id, result)

    # -- handlers -------------------------------------------------------------------------

    def ping(self, rid: int, call: p.Ping) -> p.Pong:
        return p.Pong(uid=os.getuid(), pid=os.getpid())

    def remove(self, rid: int, call: p.Remove) -> p.Done:
        for path in call.paths:
            self.state_dirs.release_under(path)
            rmtree(path)
        return p.Done()

    def exec(self, rid: int, call: p.Exec) -> p.ExecResult:
        return run_step(rid, call, self.snapshotters.get(call.step.step_dir), self.containers,
                        self.state_dirs, lambda data: self.send(rid, p.Log(data=data)))

    def fileop(self, rid: int, call: p.FileOp) -> p.FileOpResult:
        return run_fileop(call, self.snapshotters.get(call.step.step_dir))

    def cancel(self, rid: int, call: p.Cancel) -> p.Done:
        self.containers.cancel(call)
        return p.Done()

    def probe_snapshotter(self, rid: int, call: p.ProbeSnapshotter) -> p.Done:
        """Pick the snapshotter now, so that the first step does not wait for the probe
        (pybuild asks as soon as the daemon is up)."""
        self.snapshotters.get(os.path.join(call.dir, "snapshotter"))
        return p.Done()

    # -- the loop ---------------------------------------------------------------------------

    def serve(self, lines: TextIO) -> None:
        """Answer requests until stdin closes (pybuild is done with us), then kill what
        still runs."""
        for line in lines:
            if not line.strip():
                continue
            try:
                msg = p.decode(line)
            except p.ProtocolError as exc:
                print(f"pybuild sandbox: {exc}", file=sys.stderr, flush=True)
                continue
            if not isinstance(msg, p.Request):
                continue
            if isinstance(msg.call, p.Cancel):
                self.handle(msg)
                continue
            threading.Thread(target=self.handle, args=(msg,), daemon=True).start()
        self.containers.kill_all()


def main() -> None:
    namespaces.enter()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Daemon(sys.stdout).serve(sys.stdin)
    os._exit(0)

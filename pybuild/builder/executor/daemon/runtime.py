"""The OCI runtime (crun or runc): running a step's container, killing it, probing it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

from pybuild.builder.executor.daemon import linux
from pybuild.builder.executor.daemon.cleanup import Teardown, quiet_umount, rmtree
from pybuild.builder.executor.protocol import Cancel, ProbeRuntime, RuntimeProbe
from pybuild.builder.executor.spec import StepSpec, make_config

# Messages of a runtime that ran the step but could not exec its command: a step failure,
# not a reason to try the other runtime.
_EXEC_FAILURE = ("executable file", "exec:", "not found in $path", "exec format error",
                 "permission denied", "no such file or directory")


def runtime_error(log_path: str, code: int) -> str:
    """The runtime's own error (it could not run the step), or "" when the step ran
    (whatever its exit code) or merely failed to exec its command."""
    if code == 0:
        return ""
    try:
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            msg = str(entry.get("msg", ""))
            if any(p in msg.lower() for p in _EXEC_FAILURE):
                return ""
            return msg
    return ""


class StateDirs:
    """The runtimes' state dirs: tmpfs mounts (fast, and container state never hits the
    disk), made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mounted: set[str] = set()

    def get(self, path: str) -> str:
        with self._lock:
            if path not in self._mounted:
                os.makedirs(path, exist_ok=True)
                linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                            "mode=0700,size=32m")
                self._mounted.add(path)
        return path

    def release_under(self, path: str) -> None:
        """Unmount the state dirs in the tree `path` (before it is removed)."""
        with self._lock:
            for p in list(self._mounted):
                if p == path or p.startswith(path.rstrip("/") + "/"):
                    with contextlib.suppress(OSError):
                        linux.umount(p)
                    self._mounted.discard(p)


LogWriter = Callable[[str], None]


class Containers:
    """The containers this daemon runs, by the id of the request that runs each (so that
    a `Cancel` finds it)."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[subprocess.Popen[bytes], str, str, str]] = {}
        self._cancelled: set[int] = set()

    def run(self, rid: int, runtime: str, state_dir: str, bundle: str, log_path: str,
            log: LogWriter) -> tuple[int, str]:
        """Run the bundle's container to its end, passing its output to `log`; returns
        (exit code, the runtime's own error or "")."""
        cid = "pybuild-" + uuid.uuid4().hex[:16]
        args = [runtime, "--root", state_dir, "--log", log_path, "--log-format", "json",
                "run", "--bundle", bundle, cid]
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        except OSError as exc:
            return 1, f"cannot start {runtime}: {exc.strerror}"
        self._running[rid] = (proc, runtime, state_dir, cid)
        clean = False
        try:
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
                if not chunk:
                    break
                log(chunk.decode("utf-8", "replace"))
            code = proc.wait()
            error = runtime_error(log_path, code)
            clean = not error and rid not in self._cancelled
            return code, error
        finally:
            self._running.pop(rid, None)
            self._cancelled.discard(rid)
            if not clean:
                # `run` deletes the container when it exits; after a kill or a runtime
                # error, make sure nothing is left behind.
                subprocess.run([runtime, "--root", state_dir, "delete", "--force", cid],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cancel(self, req: Cancel) -> None:
        """Kill a running step's container (BuildKit kills on cancellation, no grace)."""
        entry = self._running.get(req.target)
        if entry is None:
            return
        proc, runtime, state_dir, cid = entry
        self._cancelled.add(req.target)
        # SIGKILL to the container's init ends its whole pid namespace. (`kill --all`
        # needs the container's cgroup, which rootless containers here do not have.)
        subprocess.run([runtime, "--root", state_dir, "kill", cid, "KILL"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=req.grace)
        except subprocess.TimeoutExpired:
            proc.kill()

    def kill_all(self) -> None:
        for proc, *_ in list(self._running.values()):
            with contextlib.suppress(OSError):
                proc.kill()


def probe(req: ProbeRuntime, state_dirs: StateDirs) -> RuntimeProbe:
    """Run a trivial container (the host's /bin/true, host / as a read-only rootfs) with
    the runtime; report whether it worked and how long it took."""
    scratch = req.scratch
    rootfs = os.path.join(scratch, "rootfs")
    private = os.path.join(scratch, "private")
    os.makedirs(rootfs, exist_ok=True)
    os.makedirs(private, exist_ok=True)
    with Teardown() as stack:
        stack.callback(rmtree, scratch)
        linux.mount("/", rootfs, None, linux.MS_BIND | linux.MS_REC, None)
        stack.callback(quiet_umount, rootfs)
        linux.mount("tmpfs", private, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    "mode=0711,size=1m")
        stack.callback(quiet_umount, private)
        spec = StepSpec(args=("/bin/true",), env=("PATH=/usr/bin:/bin",), cwd="/", uid=0,
                        gid=0, network="none")
        config = make_config(spec, rootfs=rootfs, id_extents=req.id_extents)
        config["root"]["readonly"] = True
        bundle = os.path.join(private, "bundle")
        os.makedirs(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        start = time.monotonic()
        cid = "pybuild-probe-" + uuid.uuid4().hex[:12]
        log = os.path.join(private, "log")
        try:
            proc = subprocess.run(
                [req.runtime, "--root", state_dirs.get(req.state_dir), "--log", log,
                 "--log-format", "json", "run", "--bundle", bundle, cid],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return RuntimeProbe(ok=False, error=str(exc))
        ms = (time.monotonic() - start) * 1000
        err = ""
        if proc.returncode != 0:
            err = (runtime_error(log, proc.returncode)
                   or proc.stderr.decode(errors="replace").strip()
                   or f"exit code {proc.returncode}")
        return RuntimeProbe(ok=proc.returncode == 0, error=err, ms=ms)

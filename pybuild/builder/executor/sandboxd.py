"""The sandbox daemon: one per build, living in the build's user + mount + pid namespace.

It does everything that must see container ids or needs mount privileges: unpacking
layers into snapshots, mounting overlays, running the OCI runtime, diffing upper dirs,
and removing snapshot trees owned by sub-ids. Started by `client.Sandbox`; speaks JSON
lines on stdin/stdout: requests {"id", "op", ...}; replies {"id", "event": "log"|"done"|
"error", ...}. When pybuild dies the daemon dies (PDEATHSIG), and being pid 1 of its pid
namespace, every container process dies with it; its mounts vanish with the namespace.

Keep imports light: this module starts once per build.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import traceback
import uuid
from typing import Any

# Everything the daemon uses is imported now, before it enters its user namespace: the
# namespace's root may not be allowed to read the Python installation (e.g. under /root).
from pybuild.builder.executor.fileops import apply_actions
from pybuild.builder.executor.spec import SpecMount, StepSpec, make_config
from pybuild.builder.executor.users import resolve_user
from pybuild.errors import UserError
from pybuild.layers.apply import apply_layer, open_layer_stream
from pybuild.layers.compress import write_diff_compressed
from pybuild.layers.decompress import decompressed

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)
_out_lock = threading.Lock()


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                    ctypes.c_ulong(flags), data.encode() if data else None),
        f"mount {target}",
    )


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _send(msg: dict[str, Any]) -> None:
    line = json.dumps(msg, separators=(",", ":")) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


# --- namespace setup -------------------------------------------------------------------


def _enter_namespaces() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = int(os.environ.get("PYBUILD_PARENT_PID", "0"))
    if parent and os.getppid() != parent:
        os._exit(1)
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(user)")
    sys.stdout.write("userns\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "mapped":
        os._exit(1)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    with contextlib.suppress(OSError):
        os.setgroups([])
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare(mount, pid)")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    _hide_cgroup2_controllers()
    pid = os.fork()
    if pid:
        # The first child is pid 1 of the new pid namespace; mirror its fate.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # A private /proc for this pid namespace so that runtimes see their own children.
    with contextlib.suppress(OSError):
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)


def _hide_cgroup2_controllers() -> None:
    """crun refuses hybrid cgroup hosts whose cgroup2 has controllers; inside our own
    mount namespace we hide cgroup2 under a tmpfs (pybuild sets no cgroup limits there)."""
    unified = "/sys/fs/cgroup/unified"
    try:
        with open(os.path.join(unified, "cgroup.controllers")) as f:
            controllers = f.read().strip()
    except OSError:
        return
    if controllers:
        with contextlib.suppress(OSError):
            mount("tmpfs", unified, "tmpfs", 0, "size=4k")


# --- requests --------------------------------------------------------------------------


def op_ping(req: dict[str, Any]) -> dict[str, Any]:
    return {"uid": os.getuid(), "pid": os.getpid()}


class _HashingReader(io.RawIOBase):
    """Hashes every byte read from a blob, so a corrupt blob is caught while unpacking."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        if n:
            self.hash.update(memoryview(b)[:n])
        return n or 0

    def drain(self) -> str:
        while chunk := self._f.read(1 << 20):
            self.hash.update(chunk)
        return "sha256:" + self.hash.hexdigest()


def op_apply(req: dict[str, Any]) -> dict[str, Any]:
    """Unpack a layer blob into a snapshot dir (overlay lower format), atomically, checking
    the blob's digest on the way."""
    dest = req["dest"]
    if os.path.isdir(dest):
        return {"existed": True}
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        with open(req["blob"], "rb") as raw:
            hashing = _HashingReader(raw)
            stream = decompressed(io.BufferedReader(hashing, 1 << 20))  # type: ignore[arg-type]
            try:
                apply_layer(stream, tmp, overlay_format=True)
            except Exception as exc:
                if req.get("digest") and hashing.drain() != req["digest"]:
                    raise UserError(f"layer {req['digest']} in the content store is corrupt "
                                    "(its content does not match its digest)") from exc
                raise
            actual = hashing.drain()
        if req.get("digest") and actual != req["digest"]:
            raise UserError(f"layer {req['digest']} in the content store is corrupt (content "
                            f"hashes to {actual})", code="integrity")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            _rmtree(tmp)
    except BaseException:
        _rmtree(tmp)
        raise
    return {"existed": False}


def _rmtree(path: str) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        # Directories made unwritable (mode 000, chmod -w) must be opened up first.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=onerror)
        else:
            os.unlink(path)


def op_rm(req: dict[str, Any]) -> dict[str, Any]:
    for path in req["paths"]:
        _rmtree(path)
    return {}


class _Overlay:
    """rootfs = overlay(lowers..., fresh upper) mounted at step/merged."""

    def __init__(self, step_dir: str, lowers: list[str]) -> None:
        self.step_dir = step_dir
        self.upper = os.path.join(step_dir, "upper")
        self.work = os.path.join(step_dir, "work")
        self.merged = os.path.join(step_dir, "merged")
        self.lowers = lowers
        for d in (self.upper, self.work, self.merged):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.upper, 0o755)
        self.mounted = False

    def __enter__(self) -> _Overlay:
        lowers = self.lowers or [self._empty_lower()]
        # Relative lowerdir paths keep the option string short (the kernel caps it at a page).
        common = os.path.dirname(lowers[0])
        if all(os.path.dirname(x) == common for x in lowers):
            cwd = os.getcwd()
            os.chdir(common)
            try:
                opts = "lowerdir=" + ":".join(os.path.basename(x) for x in lowers)
                self._mount(opts)
            finally:
                os.chdir(cwd)
        else:
            self._mount("lowerdir=" + ":".join(lowers))
        self.mounted = True
        return self

    def _mount(self, lower_opt: str) -> None:
        opts = f"{lower_opt},upperdir={self.upper},workdir={self.work},userxattr"
        mount("overlay", self.merged, "overlay", 0, opts)

    def _empty_lower(self) -> str:
        path = os.path.join(self.step_dir, "empty")
        os.makedirs(path, exist_ok=True)
        return path

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            umount(self.merged)
            self.mounted = False


def _prepare_mountpoints(root: str, destinations: list[tuple[str, bool]]) -> list[str]:
    """Create missing mount points (dirs, or empty files for file binds); return the paths
    created, so they can be removed afterwards and never reach the layer."""
    created: list[str] = []
    for dest, is_file in destinations:
        parts = [p for p in dest.split("/") if p]
        cur = root
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            if os.path.lexists(cur):
                continue
            is_last = i == len(parts) - 1
            if is_last and is_file:
                with open(cur, "w"):
                    pass
            else:
                os.mkdir(cur, 0o755)
            created.append(cur)
    return created


def _remove_mountpoints(created: list[str]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)


def _lookup_user(root: str, user: str) -> tuple[int, int, list[int]]:
    """USER value -> (uid, gid, additional gids), from the rootfs' /etc/passwd and group."""
    return resolve_user(root, user)


def op_exec(req: dict[str, Any]) -> dict[str, Any]:
    rid = req["id"]
    step_dir = req["step_dir"]
    os.makedirs(step_dir, exist_ok=True)
    with _Overlay(step_dir, req["lowers"]) as ov:
        uid, gid, groups = _lookup_user(ov.merged, req.get("user", ""))
        cwd = req.get("cwd") or "/"
        cwd_path = os.path.join(ov.merged, cwd.lstrip("/"))
        if not os.path.isdir(cwd_path):
            os.makedirs(cwd_path, 0o755, exist_ok=True)
            with contextlib.suppress(OSError):
                os.lchown(cwd_path, uid, gid)
        mounts, extra_mounted = _resolve_mounts(step_dir, req.get("mounts", []),
                                                req.get("cache_root", ""))
        destinations = [("/proc", False), ("/dev", False), ("/sys", False)]
        destinations += [(m["destination"], bool(m.get("file"))) for m in req.get("mounts", [])]
        created = _prepare_mountpoints(ov.merged, destinations)
        spec = StepSpec(
            args=tuple(req["args"]), env=tuple(req["env"]), cwd=cwd, uid=uid, gid=gid,
            additional_gids=tuple(groups), hostname=req.get("hostname") or "buildkitsandbox",
            network=req.get("network", "none"), insecure=bool(req.get("insecure")),
            mounts=tuple(mounts),
        )
        config = make_config(spec, rootfs=ov.merged, id_extents=req["id_extents"])
        bundle = os.path.join(step_dir, "bundle")
        os.makedirs(bundle, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        try:
            code = _run_runtime(rid, req["runtime"], req["state_dir"], bundle,
                                "pybuild-" + uuid.uuid4().hex[:16], req.get("timeout"))
        finally:
            _remove_mountpoints(created)
            for path in reversed(extra_mounted):
                with contextlib.suppress(OSError):
                    umount(path)
    return {"exit_code": code}


def _resolve_mounts(step_dir: str, reqs: list[dict[str, Any]],
                    cache_root: str) -> tuple[list[SpecMount], list[str]]:
    """Turn mount requests into runtime mounts; stage/image sources are mounted here as
    read-only overlays (an rw bind gets a throwaway upper, so its writes are discarded)."""
    out: list[SpecMount] = []
    mounted: list[str] = []
    for i, m in enumerate(reqs):
        source = m.get("source", "")
        if m.get("src_lowers") is not None:
            mnt = os.path.join(step_dir, f"mnt{i}")
            empty = os.path.join(step_dir, "empty")
            os.makedirs(mnt, exist_ok=True)
            os.makedirs(empty, exist_ok=True)
            lowers = ":".join([*m["src_lowers"], empty])
            if m.get("readonly", True):
                mount("overlay", mnt, "overlay", MS_RDONLY, f"lowerdir={lowers}")
            else:
                up, wk = os.path.join(step_dir, f"mnt{i}-up"), os.path.join(step_dir, f"mnt{i}-wk")
                os.makedirs(up, exist_ok=True)
                os.makedirs(wk, exist_ok=True)
                mount("overlay", mnt, "overlay", 0,
                      f"lowerdir={lowers},upperdir={up},workdir={wk},userxattr")
            mounted.append(mnt)
            source = os.path.join(mnt, m.get("selector", "/").lstrip("/"))
        elif m.get("cache_dir"):
            source = os.path.join(cache_root, m["cache_dir"])
            if not os.path.isdir(source):
                os.makedirs(source, exist_ok=True)
                os.chmod(source, m.get("cache_mode", 0o755))
                os.chown(source, m.get("cache_uid", 0), m.get("cache_gid", 0))
        out.append(SpecMount(destination=m["destination"], type=m["type"], source=source,
                             options=tuple(m.get("options", ()))))
    return out, mounted


_running: dict[int, subprocess.Popen[bytes]] = {}


def _run_runtime(rid: int, runtime: str, state_dir: str, bundle: str, cid: str,
                 timeout: float | None) -> int:
    args = [runtime, "--root", state_dir, "run", "--bundle", bundle, cid]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    _running[rid] = proc
    try:
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            _send({"id": rid, "event": "log", "data": chunk.decode("utf-8", "replace")})
        return proc.wait()
    finally:
        _running.pop(rid, None)
        # `run` deletes the container on exit; make sure nothing is left if it was killed.
        subprocess.run([runtime, "--root", state_dir, "delete", "--force", cid],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def op_cancel(req: dict[str, Any]) -> dict[str, Any]:
    proc = _running.get(req["target"])
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=float(req.get("grace", 5)))
        except subprocess.TimeoutExpired:
            proc.kill()
    return {}


def op_fileop(req: dict[str, Any]) -> dict[str, Any]:
    """Apply file actions (copy, mkdir, mkfile) on the overlay of the step.

    A copy reads from `src_tar` (build-context files prepared by pybuild, extracted to a
    staging dir) or from `src_lowers` (the snapshots of a stage or image, mounted
    read-only)."""
    step_dir = req["step_dir"]
    os.makedirs(step_dir, exist_ok=True)
    sources: list[str] = []
    actions = []
    try:
        for i, action in enumerate(req["actions"]):
            action = dict(action)
            if action["kind"] == "copy":
                src = os.path.join(step_dir, f"src{i}")
                os.makedirs(src)
                if action.get("src_tar"):
                    with open_layer_stream(action["src_tar"]) as stream:
                        apply_layer(stream, src, overlay_format=False)
                elif action.get("src_lowers"):
                    empty = os.path.join(step_dir, "empty")
                    os.makedirs(empty, exist_ok=True)
                    mount("overlay", src, "overlay", MS_RDONLY,
                          "lowerdir=" + ":".join([*action["src_lowers"], empty]))
                    sources.append(src)
                action["src_root"] = src
            actions.append(action)
        with _Overlay(step_dir, req["lowers"]) as ov:
            apply_actions(ov.merged, actions)
    finally:
        for src in sources:
            with contextlib.suppress(OSError):
                umount(src)
    return {}


def op_commit(req: dict[str, Any]) -> dict[str, Any]:
    """Diff step/upper into a layer blob; keep the upper dir as the new snapshot."""
    step_dir = req["step_dir"]
    upper = os.path.join(step_dir, "upper")
    result = write_diff_compressed(upper, req["out"], req.get("compression", "gzip"),
                                   mtime=req.get("mtime"))
    empty = result.size <= 1024  # a tar with no entries is its two zero blocks
    out: dict[str, Any] = {
        "diff_id": result.diff_id, "size": result.size, "digest": result.digest,
        "compressed_size": result.compressed_size, "media_type": result.media_type,
        "empty": empty,
    }
    if not empty and req.get("snapshot_dir"):
        _strip_overlay_xattrs(upper)
        dest = os.path.join(req["snapshot_dir"], result.diff_id.split(":", 1)[1][:24])
        try:
            os.rename(upper, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    _rmtree(step_dir)
    return out


def _strip_overlay_xattrs(root: str) -> None:
    """Overlay bookkeeping xattrs of an upper dir must not follow it into a lower dir."""
    keep = {b"user.overlay.opaque"}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            try:
                attrs = os.listxattr(name, follow_symlinks=False)
            except OSError:
                continue
            for a in attrs:
                if a.startswith("user.overlay.") and a.encode() not in keep:
                    with contextlib.suppress(OSError):
                        os.removexattr(name, a, follow_symlinks=False)


OPS = {
    "ping": op_ping,
    "apply": op_apply,
    "rm": op_rm,
    "exec": op_exec,
    "fileop": op_fileop,
    "commit": op_commit,
    "cancel": op_cancel,
}


def _handle(req: dict[str, Any]) -> None:
    rid = req.get("id", 0)
    try:
        result = OPS[req["op"]](req)
        _send({"id": rid, "event": "done", "result": result})
    except Exception as exc:  # reported to the client, which turns it into a typed error
        code = getattr(exc, "code", "")
        _send({"id": rid, "event": "error", "error": str(exc),
               "code": code if isinstance(code, str) else "",
               "user": _is_user_error(exc), "trace": traceback.format_exc()})


def _is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, UserError)


def main() -> None:
    _enter_namespaces()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("op") == "cancel":
            _handle(req)
            continue
        threading.Thread(target=_handle, args=(req,), daemon=True).start()
    # stdin closed: pybuild is done with us. Kill what is still running.
    for proc in list(_running.values()):
        with contextlib.suppress(OSError):
            proc.kill()
    os._exit(0)


if __name__ == "__main__":
    main()

"""The sandbox daemon: one per build, living in the build's user + mount + pid namespace.

It does everything that must see container ids or needs mount privileges: unpacking
layers into snapshots, mounting overlays, running the OCI runtime, diffing upper dirs,
and removing snapshot trees owned by sub-ids. Started by `client.Sandbox`; speaks JSON
lines on stdin/stdout: requests {"id", "op", ...}; replies {"id", "event": "log"|"done"|
"error", ...}. When pybuild dies the daemon dies (PDEATHSIG), and being pid 1 of its pid
namespace, every container process dies with it; its mounts vanish with the namespace.

Step environment (as BuildKit): hostname `buildkitsandbox` and `HOSTNAME` in the env,
generated read-only /etc/hosts and /etc/resolv.conf binds, a missing cwd made with the
step user's ownership, PATH defaulted by the solver.

Network: `none` is a new netns with only `lo` (up); `host` and `default` share the host's
netns. Decision for `default`: rootless BuildKit (via RootlessKit) and Buildah give steps
the caller's connectivity; a slirp4netns netns per step would isolate better but costs a
helper process per step (tens of ms, against the 40 ms per-step budget) and hides the
host's loopback (reachable only as 10.0.2.2). So default = host netns, as before.

Mount points that pybuild creates in the rootfs (/proc, /dev, /sys, /etc/hosts, mount
targets such as /run/secrets/x) are removed after the step, and dirs that were copied up
only because of them are pruned from the upper, so none of them reaches the layer.
Step-private files (config.json with env secrets, secret files, hosts) live on a tmpfs of
this mount namespace and never touch the disk; runtime state is on a tmpfs too.

Keep imports light: this module starts once per build.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

# Everything the daemon uses is imported now, before it enters its user namespace: the
# namespace's root may not be allowed to read the Python installation (e.g. under /root).
from pybuild.builder.executor.fileops import _mkdirs, apply_actions
from pybuild.builder.executor.lowers import probe_path
from pybuild.builder.executor.spec import DEFAULT_HOSTNAME, SpecMount, StepSpec, make_config
from pybuild.builder.executor.users import resolve_in_root, resolve_user
from pybuild.builder.snapshot.mounts import ENV_VAR as SNAPSHOTTER_ENV
from pybuild.builder.snapshot.mounts import (
    MountedRoot,
    Snapshotter,
    make_snapshotter,
)
from pybuild.builder.snapshot.mounts import probe as probe_snapshotter
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
            stream = decompressed(io.BufferedReader(hashing, 1 << 20))
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
        _unmount_state_under(path)
        _rmtree(path)
    return {}


_snap_lock = threading.Lock()
_snapshotter: Snapshotter | None = None
_snapshotter_notice: dict[str, str] | None = None


def _get_snapshotter(step_dir: str) -> Snapshotter:
    """Probe once per daemon (i.e. per build); the first result carries a notice."""
    global _snapshotter, _snapshotter_notice
    with _snap_lock:
        if _snapshotter is None:
            scratch = f"{step_dir}.probe-{uuid.uuid4().hex[:6]}"
            name, why = probe_snapshotter(scratch, os.environ.get(SNAPSHOTTER_ENV, ""))
            _snapshotter = make_snapshotter(name)
            _snapshotter_notice = {"name": name, "why": why}
        return _snapshotter


def op_probe_snapshotter(req: dict[str, Any]) -> dict[str, Any]:
    """Pick the snapshotter now, in the sandbox's scratch dir `dir`, so that the first step
    does not wait for the probe (pybuild asks as soon as the daemon is up)."""
    _get_snapshotter(os.path.join(req["dir"], "snapshotter"))
    return _take_notice({})


def _take_notice(out: dict[str, Any]) -> dict[str, Any]:
    global _snapshotter_notice
    with _snap_lock:
        if _snapshotter_notice is not None:
            out["snapshotter"] = _snapshotter_notice
            _snapshotter_notice = None
    return out


class _Overlay:
    """rootfs = lowers + a fresh upper at step/merged, by the build's snapshotter."""

    def __init__(self, step_dir: str, lowers: list[str]) -> None:
        self.snap = _get_snapshotter(step_dir)
        self.root = MountedRoot(
            step_dir=step_dir, merged=os.path.join(step_dir, "merged"),
            upper=os.path.join(step_dir, "upper"), work=os.path.join(step_dir, "work"),
            lowers=list(lowers))
        for d in (self.root.upper, self.root.work, self.root.merged):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.root.upper, 0o755)
        self.merged = self.root.merged
        self.upper = self.root.upper

    def __enter__(self) -> _Overlay:
        self.snap.mount(self.root)
        return self

    def __exit__(self, *exc: object) -> None:
        self.snap.release(self.root)


@dataclass(slots=True)
class _Stub:
    """A mount point pybuild made in the rootfs; removed after the step, with the copied-up
    ancestors it caused, so that it never reaches the layer."""

    created: list[str]
    ancestors: list[tuple[str, tuple[int, int, int]]]  # rel path, (mode, uid, gid) before


def _prepare_mountpoints(root: str, destinations: list[tuple[str, bool]]) -> _Stub:
    """Create missing mount points (dirs, or empty files for file binds), resolving
    symlinks inside the rootfs as the runtime will; remember the existing dirs that the
    creation copies up."""
    stub = _Stub(created=[], ancestors=[])
    recorded: set[str] = set()
    for dest, is_file in destinations:
        parts = [p for p in dest.split("/") if p]
        for i in range(len(parts)):
            cur = resolve_in_root(root, "/" + "/".join(parts[: i + 1]))
            if os.path.lexists(cur):
                continue
            parent = os.path.dirname(cur)
            if not any(parent == c or parent.startswith(c + "/") for c in stub.created):
                # The first missing component: every existing dir above it is copied up.
                rel = os.path.relpath(parent, root)
                while rel not in (".", "") and rel not in recorded:
                    recorded.add(rel)
                    st = os.lstat(os.path.join(root, rel))
                    stub.ancestors.append((rel, (st.st_mode, st.st_uid, st.st_gid)))
                    rel = os.path.dirname(rel)
            if i == len(parts) - 1 and is_file:
                with open(cur, "w"):
                    pass
            else:
                os.mkdir(cur, 0o755)
            stub.created.append(cur)
    return stub


def _remove_mountpoints(stub: _Stub) -> None:
    for path in reversed(stub.created):
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)


def _prune_copied_up(upper: str, stub: _Stub) -> None:
    """Dirs that are in the upper only because a mount point was made in them: if they are
    now empty and unchanged (mode, owner, no opaque mark), drop them so that the lower
    shows through and they stay out of the layer."""
    for rel, before in sorted(stub.ancestors, key=lambda a: -a[0].count("/")):
        path = os.path.join(upper, rel)
        try:
            st = os.lstat(path)
            if (not stat.S_ISDIR(st.st_mode) or os.listdir(path)
                    or (st.st_mode, st.st_uid, st.st_gid) != before
                    or any(a.endswith("overlay.opaque") for a in _listxattr(path))):
                continue
            os.rmdir(path)
        except OSError:
            continue


def _listxattr(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def _mkdir_all_chown(root: str, cwd: str, uid: int, gid: int) -> None:
    """BuildKit creates a missing working dir with MkdirAllAndChown(0755, the user)."""
    parts = [p for p in cwd.split("/") if p]
    for i in range(len(parts)):
        real = resolve_in_root(root, "/" + "/".join(parts[: i + 1]))
        if os.path.isdir(real):
            continue
        if os.path.lexists(real):
            raise UserError(f"working directory {cwd} is not a directory in the image")
        os.mkdir(real, 0o755)
        with contextlib.suppress(OSError):
            os.lchown(real, uid, gid)


HOSTS = "127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _resolv_conf(network: str) -> str:
    """The host's resolv.conf; without the host's netns, loopback resolvers are useless
    and are dropped (BuildKit falls back to Google's resolvers then)."""
    try:
        with open("/etc/resolv.conf") as f:
            text = f.read()
    except OSError:
        text = ""
    if network == "host":
        return text
    lines = [ln for ln in text.splitlines()
             if not (ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1
                     and (ln.split()[1].startswith("127.") or ln.split()[1] == "::1"))]
    if not any(ln.startswith("nameserver") for ln in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def op_exec(req: dict[str, Any]) -> dict[str, Any]:
    rid = req["id"]
    step_dir = req["step_dir"]
    os.makedirs(step_dir, exist_ok=True)
    private = os.path.join(step_dir, "private")
    os.makedirs(private, exist_ok=True)
    # Step-private files (config.json with the env, secrets, hosts) live on a tmpfs of the
    # daemon's mount namespace: they never touch the disk and vanish with the step.
    mount("tmpfs", private, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=16m")
    ov = _Overlay(step_dir, req["lowers"])
    stub = _Stub(created=[], ancestors=[])
    extra_mounted: list[str] = []
    locks: list[int] = []
    try:
        with ov:
            uid, gid, groups = resolve_user(ov.merged, req.get("user", ""))
            cwd = req.get("cwd") or "/"
            _mkdir_all_chown(ov.merged, cwd, uid, gid)
            env = list(req["env"])
            mounts, extra_mounted, locks = _resolve_mounts(step_dir, private, req, env)
            hostname = req.get("hostname") or DEFAULT_HOSTNAME
            network = req.get("network", "none")
            if not any(e.startswith("HOSTNAME=") for e in env):
                env.append(f"HOSTNAME={hostname}")
            for name, text in (("hosts", HOSTS.format(name=hostname)),
                               ("resolv.conf", _resolv_conf(network))):
                path = os.path.join(private, name)
                with open(path, "w") as f:
                    f.write(text)
                os.chmod(path, 0o644)
                # nosuid,nodev: the flags of the tmpfs under it are locked in the nested
                # user namespace, and runc's read-only remount must keep them.
                mounts.append(SpecMount(destination=f"/etc/{name}", type="bind", source=path,
                                        options=("rbind", "ro", "nosuid", "nodev")))
            destinations = [("/proc", False), ("/dev", False), ("/sys", False)]
            destinations += [(m.destination, m.type == "bind" and _is_file_like(m.source))
                             for m in mounts]
            stub = _prepare_mountpoints(ov.merged, destinations)
            spec = StepSpec(
                args=tuple(req["args"]), env=tuple(env), cwd=cwd, uid=uid, gid=gid,
                additional_gids=tuple(groups), hostname=hostname, network=network,
                insecure=bool(req.get("insecure")), mounts=tuple(mounts),
            )
            config = make_config(spec, rootfs=ov.merged, id_extents=req["id_extents"])
            bundle = os.path.join(private, "bundle")
            os.makedirs(bundle, exist_ok=True)
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(config, f)
            runtimes = [r for r in (req["runtime"], req.get("fallback", "")) if r]
            state_dir = _state_dir(req["state_dir"])
            used = runtimes[0]
            runtime_error = ""
            fell_back = False
            reason = ""
            for i, runtime in enumerate(runtimes):
                used = runtime
                code, runtime_error = _run_runtime(rid, runtime, state_dir, bundle,
                                                   os.path.join(private, f"log{i}"))
                if not runtime_error or i == len(runtimes) - 1:
                    break
                fell_back = True
                reason = runtime_error
                _send({"id": rid, "event": "log",
                       "data": f"pybuild: {os.path.basename(runtime)} failed to run the step "
                               f"({runtime_error}); retrying with "
                               f"{os.path.basename(runtimes[i + 1])}\n"})
            _remove_mountpoints(stub)
            stub.created = []
            for path in reversed(extra_mounted):
                with contextlib.suppress(OSError):
                    umount(path)
            extra_mounted = []
    finally:
        _remove_mountpoints(stub)
        for path in reversed(extra_mounted):
            with contextlib.suppress(OSError):
                umount(path)
        for fd in locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            umount(private)
    _prune_copied_up(ov.upper, stub)
    out: dict[str, Any] = {"exit_code": code, "runtime": used, "fell_back": fell_back,
                           "runtime_error": runtime_error, "fallback_reason": reason}
    if code == 0 and req.get("commit"):
        out["commit"] = op_commit({**req["commit"], "step_dir": step_dir})
    elif code != 0 and req.get("commit"):
        _rmtree(step_dir)
    return _take_notice(out)


def _is_file_like(path: str) -> bool:
    """A bind source that needs a file (not a dir) as its mount point."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


_state_lock = threading.Lock()
_state_mounted: set[str] = set()


def _state_dir(path: str) -> str:
    """The runtimes' state dir: a tmpfs (fast, and container state never hits the disk)."""
    with _state_lock:
        if path not in _state_mounted:
            os.makedirs(path, exist_ok=True)
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=32m")
            _state_mounted.add(path)
    return path


def _unmount_state_under(path: str) -> None:
    with _state_lock:
        for p in list(_state_mounted):
            if p == path or p.startswith(path.rstrip("/") + "/"):
                with contextlib.suppress(OSError):
                    umount(p)
                _state_mounted.discard(p)


def _mount_overlay_source(step_dir: str, i: int, lowers: list[str], readonly: bool) -> str:
    mnt = os.path.join(step_dir, f"mnt{i}")
    empty = os.path.join(step_dir, "empty")
    os.makedirs(mnt, exist_ok=True)
    os.makedirs(empty, exist_ok=True)
    opt = "lowerdir=" + ":".join([*lowers, empty])
    if readonly:
        mount("overlay", mnt, "overlay", MS_RDONLY, opt)
    else:
        # An rw bind gets a throwaway upper: its writes are discarded with the step.
        up, wk = os.path.join(step_dir, f"mnt{i}-up"), os.path.join(step_dir, f"mnt{i}-wk")
        os.makedirs(up, exist_ok=True)
        os.makedirs(wk, exist_ok=True)
        mount("overlay", mnt, "overlay", 0, f"{opt},upperdir={up},workdir={wk},userxattr")
    return mnt


def _resolve_mounts(step_dir: str, private: str, req: dict[str, Any],
                    env: list[str]) -> tuple[list[SpecMount], list[str], list[int]]:
    """Turn mount requests into runtime mounts. Returns (mounts, paths mounted here, lock fds)."""
    out: list[SpecMount] = []
    mounted: list[str] = []
    locks: list[int] = []
    for i, m in enumerate(req.get("mounts", [])):
        kind = m.get("kind", m["type"])
        source = m.get("source", "")
        options = tuple(m.get("options", ()))
        if kind == "secret":
            data = base64.b64decode(m["data"])
            if m.get("env"):
                env.append(f"{m['env']}={data.decode('utf-8', 'replace')}")
            if not m.get("destination"):
                continue
            source = os.path.join(private, f"secret{i}")
            fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chown(source, m.get("uid", 0), m.get("gid", 0))
            os.chmod(source, m.get("mode", 0o400))
            options = ("rbind", "ro", "nosuid", "nodev", "noexec")
        elif kind == "ssh":
            env.append(f"SSH_AUTH_SOCK={m['destination']}")
            options = ("rbind", "rw")
        elif m.get("src_tar") and kind == "bind":
            mnt = os.path.join(step_dir, f"mnt{i}")
            os.makedirs(mnt)
            with open_layer_stream(m["src_tar"]) as stream:
                apply_layer(stream, mnt, overlay_format=False, whiteouts=False)
            source = os.path.join(mnt, m.get("selector", "/").lstrip("/"))
        elif m.get("src_lowers") is not None and kind == "bind":
            mnt = _mount_overlay_source(step_dir, i, m["src_lowers"], m.get("readonly", True))
            mounted.append(mnt)
            source = os.path.join(mnt, m.get("selector", "/").lstrip("/"))
        elif kind == "cache":
            source, lock = _cache_dir(req.get("cache_root", ""), m, step_dir, i)
            if lock is not None:
                locks.append(lock)
        out.append(SpecMount(destination=m["destination"], type=m["type"], source=source,
                             options=options))
    return out, mounted, locks


def _flock(path: str, flags: int) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _cache_dir(cache_root: str, m: dict[str, Any], step_dir: str,
               i: int) -> tuple[str, int | None]:
    """The dir of a cache mount, with the lock its sharing mode asks for (flock, so that
    it holds across concurrent pybuild processes):
    shared: LOCK_SH on the instance; locked: LOCK_EX, waiting; private: the first
    instance nobody uses (LOCK_EX without waiting), a new one if all are busy."""
    base = os.path.join(cache_root, m["cache_dir"])
    sharing = m.get("sharing", "shared")
    fd: int | None
    if sharing == "private":
        n = 0
        while True:
            path = base if n == 0 else f"{base}-{n}"
            fd = _flock(path + ".lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is not None:
                break
            n += 1
    else:
        path = base
        fd = _flock(path + ".lock", fcntl.LOCK_EX if sharing == "locked" else fcntl.LOCK_SH)
    if fd is not None:
        os.utime(fd)  # the lock file's mtime is the mount's last use (for prune until=)
    if not os.path.isdir(path):
        tmp = f"{path}.new-{uuid.uuid4().hex[:8]}"
        os.makedirs(tmp)
        if m.get("src_lowers") is not None:
            src = _mount_overlay_source(step_dir, i, m["src_lowers"], True)
            try:
                seed = os.path.join(src, m.get("selector", "/").lstrip("/"))
                if os.path.isdir(seed):
                    shutil.copytree(seed, tmp, symlinks=True, dirs_exist_ok=True,
                                    copy_function=_copy_with_owner)
                    _chown_tree(seed, tmp)
            finally:
                with contextlib.suppress(OSError):
                    umount(src)
        os.chmod(tmp, m.get("cache_mode", 0o755))
        os.chown(tmp, m.get("cache_uid", 0), m.get("cache_gid", 0))
        try:
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            _rmtree(tmp)  # another build made it first
    return path, fd


def _copy_with_owner(src: str, dst: str) -> None:
    shutil.copy2(src, dst, follow_symlinks=False)


def _chown_tree(src_root: str, dst_root: str) -> None:
    for dirpath, dirnames, filenames in os.walk(src_root):
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(dst_root, os.path.relpath(s, src_root))
            st = os.lstat(s)
            with contextlib.suppress(OSError):
                os.lchown(d, st.st_uid, st.st_gid)


_running: dict[int, tuple[subprocess.Popen[bytes], str, str, str]] = {}
# Messages of a runtime that ran the step but could not exec its command: a step failure,
# not a reason to try the other runtime.
_EXEC_FAILURE = ("executable file", "exec:", "not found in $path", "exec format error",
                 "permission denied", "no such file or directory")


def _runtime_error(log_path: str, code: int) -> str:
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


def _run_runtime(rid: int, runtime: str, state_dir: str, bundle: str,
                 log_path: str) -> tuple[int, str]:
    cid = "pybuild-" + uuid.uuid4().hex[:16]
    args = [runtime, "--root", state_dir, "--log", log_path, "--log-format", "json",
            "run", "--bundle", bundle, cid]
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    except OSError as exc:
        return 1, f"cannot start {runtime}: {exc.strerror}"
    _running[rid] = (proc, runtime, state_dir, cid)
    clean = False
    try:
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            _send({"id": rid, "event": "log", "data": chunk.decode("utf-8", "replace")})
        code = proc.wait()
        error = _runtime_error(log_path, code)
        clean = not error and rid not in _cancelled
        return code, error
    finally:
        _running.pop(rid, None)
        _cancelled.discard(rid)
        if not clean:
            # `run` deletes the container when it exits; after a kill or a runtime error,
            # make sure nothing is left behind.
            subprocess.run([runtime, "--root", state_dir, "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_cancelled: set[int] = set()


def op_cancel(req: dict[str, Any]) -> dict[str, Any]:
    """Kill a running step's container (BuildKit kills on cancellation, no grace)."""
    entry = _running.get(req["target"])
    if entry is not None:
        proc, runtime, state_dir, cid = entry
        _cancelled.add(req["target"])
        # SIGKILL to the container's init ends its whole pid namespace. (`kill --all`
        # needs the container's cgroup, which rootless containers here do not have.)
        subprocess.run([runtime, "--root", state_dir, "kill", cid, "KILL"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=float(req.get("grace", 5)))
        except subprocess.TimeoutExpired:
            proc.kill()
    return {}


def op_probe_runtime(req: dict[str, Any]) -> dict[str, Any]:
    """Run a trivial container (the host's /bin/true, host / as a read-only rootfs) with
    `runtime`; report whether it worked and how long it took."""
    scratch = req["scratch"]
    rootfs = os.path.join(scratch, "rootfs")
    private = os.path.join(scratch, "private")
    os.makedirs(rootfs, exist_ok=True)
    os.makedirs(private, exist_ok=True)
    mount("/", rootfs, None, MS_BIND | MS_REC, None)
    mount("tmpfs", private, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=1m")
    try:
        spec = StepSpec(args=("/bin/true",), env=("PATH=/usr/bin:/bin",), cwd="/", uid=0,
                        gid=0, network="none")
        config = make_config(spec, rootfs=rootfs, id_extents=req["id_extents"])
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
                [req["runtime"], "--root", _state_dir(req["state_dir"]), "--log", log,
                 "--log-format", "json", "run", "--bundle", bundle, cid],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"ok": False, "error": str(exc), "ms": 0.0}
        ms = (time.monotonic() - start) * 1000
        err = ""
        if proc.returncode != 0:
            err = (_runtime_error(log, proc.returncode)
                   or proc.stderr.decode(errors="replace").strip()
                   or f"exit code {proc.returncode}")
        return {"ok": proc.returncode == 0, "error": err, "ms": ms}
    finally:
        with contextlib.suppress(OSError):
            umount(private)
        with contextlib.suppress(OSError):
            umount(rootfs)
        _rmtree(scratch)


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
                if action.get("direct"):
                    pass  # decided once the rootfs is mounted (see _apply_in_order)
                elif action.get("src_tar"):
                    with open_layer_stream(action["src_tar"]) as stream:
                        apply_layer(stream, src, overlay_format=False, whiteouts=False)
                elif action.get("src_lowers"):
                    empty = os.path.join(step_dir, "empty")
                    os.makedirs(empty, exist_ok=True)
                    mount("overlay", src, "overlay", MS_RDONLY,
                          "lowerdir=" + ":".join([*action["src_lowers"], empty]))
                    sources.append(src)
                action["src_root"] = src
            actions.append(action)
        with _Overlay(step_dir, req["lowers"]) as ov:
            _apply_in_order(ov.merged, actions)
    finally:
        for src in sources:
            with contextlib.suppress(OSError):
                umount(src)
    return _take_notice({})


def _apply_in_order(root: str, actions: list[dict[str, Any]]) -> None:
    """Apply the actions in order. A `direct` context copy whose destination does not exist
    yet is extracted straight onto the rootfs (no staging copy: the big-context case);
    otherwise its tar is staged and copied with the general rules."""
    for action in actions:
        if action.get("direct"):
            dest = action["dest"]
            real = resolve_in_root(root, dest)
            if not os.path.lexists(real):
                parent = _mkdirs(root, os.path.dirname(dest.rstrip("/")) or "/", 0o755, None)
                target = os.path.join(parent, os.path.basename(dest.rstrip("/")))
                os.mkdir(target, 0o755)
                with open_layer_stream(action["src_tar"]) as stream:
                    apply_layer(stream, target, overlay_format=False, whiteouts=False)
                os.chmod(target, 0o755)
                os.lchown(target, 0, 0)
                continue
            with open_layer_stream(action["src_tar"]) as stream:
                apply_layer(stream, action["src_root"], overlay_format=False, whiteouts=False)
        apply_actions(root, [action])


def op_commit(req: dict[str, Any]) -> dict[str, Any]:
    """Diff step/upper into a layer blob; keep the upper dir as the new snapshot."""
    started = time.monotonic()
    step_dir = req["step_dir"]
    upper = os.path.join(step_dir, "upper")
    # With the lowers known, whiteouts of paths no lower has are left out (fuse-overlayfs
    # leaves them for entries that only ever existed in the upper).
    result = write_diff_compressed(upper, req["out"], req.get("compression", "gzip"),
                                   mtime=req.get("mtime"), lower_dirs=req.get("lowers", ()))
    empty = result.size <= 1024  # a tar with no entries is its two zero blocks
    out: dict[str, Any] = {
        "diff_id": result.diff_id, "size": result.size, "digest": result.digest,
        "compressed_size": result.compressed_size, "media_type": result.media_type,
        "empty": empty,
    }
    if not empty and req.get("snapshot_dir"):
        _strip_overlay_xattrs(upper, req.get("lowers"))
        dest = os.path.join(req["snapshot_dir"], result.diff_id.split(":", 1)[1][:24])
        try:
            os.rename(upper, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    out["seconds"] = time.monotonic() - started  # reported for bench/executor_overhead.py
    _rmtree(step_dir)
    return out


_OPAQUE_NAMES = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")


def _strip_overlay_xattrs(root: str, lowers: list[str] | None = None) -> None:
    """Overlay bookkeeping xattrs of an upper dir must not follow it into a lower dir.
    Opaque marks (kernel or fuse-overlayfs style) become `user.overlay.opaque`, which the
    kernel overlay and fuse-overlayfs both read in lowers; with `lowers` known, a mark on
    a dir that no lower has hides nothing and is dropped."""
    for dirpath, dirnames, filenames in os.walk(root):
        # Each dir is handled once, as `dirpath` (its opaque mark is read before removal);
        # symlinks to dirs show up in dirnames and are never walked.
        links = [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
        for name in [dirpath, *(os.path.join(dirpath, n) for n in filenames + links)]:
            try:
                attrs = os.listxattr(name, follow_symlinks=False)
            except OSError:
                continue
            opaque = any(a in _OPAQUE_NAMES and os.getxattr(name, a, follow_symlinks=False)
                         == b"y" for a in attrs)
            for a in attrs:
                if a.startswith(("user.overlay.", "user.fuseoverlayfs.", "trusted.overlay.")):
                    with contextlib.suppress(OSError):
                        os.removexattr(name, a, follow_symlinks=False)
            marker = os.path.join(name, ".wh..wh..opq")
            if name == dirpath and os.path.lexists(marker):
                opaque = True
                with contextlib.suppress(OSError):
                    os.unlink(marker)
            if opaque and name == dirpath:
                rel = os.path.relpath(dirpath, root)
                if lowers is not None and not any(
                        os.path.isdir(os.path.join(lw, rel)) for lw in lowers):
                    continue
                with contextlib.suppress(OSError):
                    os.setxattr(name, "user.overlay.opaque", b"y", follow_symlinks=False)


def op_probe_path(req: dict[str, Any]) -> dict[str, Any]:
    """What the lowers hold along a path (the context-layer shortcut's question)."""
    return probe_path(req["lowers"], req["path"])


OPS = {
    "ping": op_ping,
    "apply": op_apply,
    "rm": op_rm,
    "exec": op_exec,
    "fileop": op_fileop,
    "commit": op_commit,
    "cancel": op_cancel,
    "probe_runtime": op_probe_runtime,
    "probe_snapshotter": op_probe_snapshotter,
    "probe_path": op_probe_path,
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
    for proc, *_ in list(_running.values()):
        with contextlib.suppress(OSError):
            proc.kill()
    os._exit(0)


if __name__ == "__main__":
    main()

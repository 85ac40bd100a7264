"""A RUN step in the sandbox: its rootfs, mounts and runtime bundle, run, torn down.

Step environment (as BuildKit): hostname `buildkitsandbox` (the UTS name only: BuildKit
puts no HOSTNAME in the environment; busybox and bash set the shell variable from the
UTS name), generated read-only /etc/hosts and /etc/resolv.conf binds, a missing cwd made
with the step user's ownership, PATH defaulted by the solver, the primary gid always in
the supplementary groups.

Network: `none` is a new netns with only `lo` (up); `host` shares the host's netns (the
solver turns `default` into one of them).

Step-private files (config.json with env secrets, secret files, hosts) live on a tmpfs of
the daemon's mount namespace and never touch the disk. Everything a step sets up (that
tmpfs, the rootfs, bind sources, cache-dir locks, mount points in the rootfs) is torn
down by one exit stack, in reverse order, whether the step succeeds, fails or is killed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from pybuild.builder.executor.daemon import linux, mountpoints
from pybuild.builder.executor.daemon.cachemounts import open_cache_dir
from pybuild.builder.executor.daemon.cleanup import Teardown, quiet_umount, rmtree
from pybuild.builder.executor.daemon.layers import commit
from pybuild.builder.executor.daemon.rootfs import mounted_root
from pybuild.builder.executor.daemon.runtime import Containers, StateDirs
from pybuild.builder.executor.protocol import (
    BindFromLowers,
    BindFromTar,
    CacheDir,
    Exec,
    ExecResult,
    ExecStep,
    SecretFile,
    SSHSocket,
    Tmpfs,
)
from pybuild.builder.executor.spec import DEFAULT_HOSTNAME, SpecMount, StepSpec, make_config
from pybuild.builder.executor.users import resolve_user
from pybuild.builder.snapshot.mounts import Snapshotter, distinct_lowers, mount_lowers
from pybuild.layers.apply import apply_layer, open_layer_stream

HOSTS = "127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"

LogWriter = Callable[[str], None]


def resolv_conf(network: str) -> str:
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


def run_step(rid: int, req: Exec, snapshotter: Snapshotter, containers: Containers,
             state_dirs: StateDirs, log: LogWriter) -> ExecResult:
    """Run the step of request `rid` and, if it succeeds and asks for it, commit it."""
    step = req.step
    os.makedirs(step.step_dir, exist_ok=True)
    private = os.path.join(step.step_dir, "private")
    os.makedirs(private, exist_ok=True)
    stubs = mountpoints.Stubs()
    with Teardown() as stack:
        linux.mount("tmpfs", private, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    "mode=0711,size=16m")
        stack.callback(quiet_umount, private)
        root = stack.enter_context(mounted_root(snapshotter, step.step_dir, step.lowers))
        uid, gid, groups = resolve_user(root.merged, step.user)
        cwd = step.cwd or "/"
        mountpoints.make_workdir(root.merged, cwd, uid, gid)
        env = list(step.env)
        mounts = _mounts(step, private, env, stack)
        hostname = step.hostname or DEFAULT_HOSTNAME
        for name, text in (("hosts", HOSTS.format(name=hostname)),
                           ("resolv.conf", resolv_conf(step.network))):
            path = os.path.join(private, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
            # nosuid,nodev: the flags of the tmpfs under it are locked in the nested user
            # namespace, and runc's read-only remount must keep them.
            mounts.append(SpecMount(destination=f"/etc/{name}", type="bind", source=path,
                                    options=("rbind", "ro", "nosuid", "nodev")))
        destinations = [("/proc", False), ("/dev", False), ("/sys", False)]
        destinations += [(m.destination, m.type == "bind" and mountpoints.is_file_like(m.source))
                         for m in mounts]
        stack.callback(mountpoints.remove, stubs)
        mountpoints.prepare(root.merged, destinations, stubs)
        spec = StepSpec(
            args=step.args, env=tuple(env), cwd=cwd, uid=uid, gid=gid,
            additional_gids=tuple(groups), hostname=hostname, network=step.network,
            insecure=step.insecure, mounts=tuple(mounts),
        )
        config = make_config(spec, rootfs=root.merged, id_extents=req.id_extents)
        bundle = os.path.join(private, "bundle")
        os.makedirs(bundle, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        result = _run(rid, req, bundle, private, containers, state_dirs, log)
    mountpoints.prune_copied_up(root.upper, stubs)
    if step.commit is None:
        return result
    if result.exit_code != 0 or result.runtime_error:
        rmtree(step.step_dir)
        return result
    return ExecResult(exit_code=0, runtime=result.runtime, fell_back=result.fell_back,
                      fallback_reason=result.fallback_reason,
                      commit=commit(step.step_dir, step.commit))


def _run(rid: int, req: Exec, bundle: str, private: str, containers: Containers,
         state_dirs: StateDirs, log: LogWriter) -> ExecResult:
    """Run the bundle with the runtime; once more with the fallback if the runtime itself
    failed (not the step)."""
    runtimes = [r for r in (req.runtime, req.fallback) if r]
    state_dir = state_dirs.get(req.state_dir)
    used, code, error, reason = runtimes[0], 1, "", ""
    for i, runtime in enumerate(runtimes):
        used = runtime
        code, error = containers.run(rid, runtime, state_dir, bundle,
                                     os.path.join(private, f"log{i}"), log)
        if not error or i == len(runtimes) - 1:
            break
        reason = error
        log(f"pybuild: {os.path.basename(runtime)} failed to run the step ({error}); "
            f"retrying with {os.path.basename(runtimes[i + 1])}\n")
    return ExecResult(exit_code=code, runtime=used, fell_back=bool(reason),
                      fallback_reason=reason, runtime_error=error)


def _mounts(step: ExecStep, private: str, env: list[str],
            stack: Teardown) -> list[SpecMount]:
    """The runtime mounts of the step's mounts (their sources set up here, torn down by
    `stack`); secrets' and agents' variables are added to `env`."""
    out: list[SpecMount] = []
    for i, m in enumerate(step.mounts):
        match m:
            case SecretFile():
                if m.env:
                    env.append(f"{m.env}={m.data.decode('utf-8', 'replace')}")
                if not m.target:
                    continue
                source = os.path.join(private, f"secret{i}")
                fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(m.data)
                os.chown(source, m.uid, m.gid)
                os.chmod(source, m.mode)
                out.append(SpecMount(destination=m.target, type="bind", source=source,
                                     options=("rbind", "ro", "nosuid", "nodev", "noexec")))
            case SSHSocket():
                env.append(f"SSH_AUTH_SOCK={m.target}")
                # The relay's socket (in the scratch dir, owned by the namespace's root)
                # gets the owner and mode the mount asks for, as BuildKit's sshforward.
                os.chown(m.socket, m.uid, m.gid)
                os.chmod(m.socket, m.mode)
                out.append(SpecMount(destination=m.target, type="bind", source=m.socket,
                                     options=("rbind", "rw")))
            case BindFromTar():
                mnt = os.path.join(step.step_dir, f"mnt{i}")
                os.makedirs(mnt)
                with open_layer_stream(m.tar) as stream:
                    apply_layer(stream, mnt, overlay_format=False, whiteouts=False)
                out.append(_bind(m.target, mnt, m.selector, m.readonly))
            case BindFromLowers():
                mnt = _overlay_source(step.step_dir, i, m.lowers, m.readonly)
                stack.callback(quiet_umount, mnt)
                out.append(_bind(m.target, mnt, m.selector, m.readonly))
            case Tmpfs():
                opts = ["nosuid", "nodev"]
                if m.size:
                    opts.append(f"size={m.size}")
                if m.readonly:
                    opts.append("ro")
                out.append(SpecMount(destination=m.target, type="tmpfs", source="tmpfs",
                                     options=tuple(opts)))
            case CacheDir():
                source = open_cache_dir(m, step.step_dir, i, stack)
                out.append(SpecMount(destination=m.target, type="bind", source=source,
                                     options=("rbind", "ro" if m.readonly else "rw")))
    return out


def _bind(target: str, mnt: str, selector: str, readonly: bool) -> SpecMount:
    return SpecMount(destination=target, type="bind",
                     source=os.path.join(mnt, selector.lstrip("/")),
                     options=("rbind", "ro" if readonly else "rw"))


def _overlay_source(step_dir: str, i: int, lowers: tuple[str, ...], readonly: bool) -> str:
    """An overlay of `lowers` at step_dir/mnt<i>; read-write ones get a throwaway upper
    (their writes are discarded with the step)."""
    mnt = os.path.join(step_dir, f"mnt{i}")
    empty = os.path.join(step_dir, "empty")
    os.makedirs(mnt, exist_ok=True)
    os.makedirs(empty, exist_ok=True)
    if readonly:
        mount_lowers(mnt, lowers, empty)
        return mnt
    up, wk = os.path.join(step_dir, f"mnt{i}-up"), os.path.join(step_dir, f"mnt{i}-wk")
    os.makedirs(up, exist_ok=True)
    os.makedirs(wk, exist_ok=True)
    opt = "lowerdir=" + ":".join([*distinct_lowers(lowers), empty])
    linux.mount("overlay", mnt, "overlay", 0, f"{opt},upperdir={up},workdir={wk},userxattr")
    return mnt

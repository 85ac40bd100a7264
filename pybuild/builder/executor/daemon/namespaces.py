"""Entering the build's namespaces: user (mapped by the parent), then mount and pid."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from pybuild.builder.executor.daemon import linux


def enter() -> None:
    """Unshare a user namespace, wait for the parent to map its ids (the handshake of
    `spawn.DaemonProcess`), become its root, then unshare a mount and a pid namespace
    and continue as pid 1 of the latter (the first process waits for it and mirrors its
    exit)."""
    linux.set_parent_death_signal(signal.SIGKILL)
    parent = int(os.environ.get("PYBUILD_PARENT_PID", "0"))
    if parent and os.getppid() != parent:
        os._exit(1)
    linux.unshare(linux.CLONE_NEWUSER)
    sys.stdout.write("userns\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "mapped":
        os._exit(1)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    with contextlib.suppress(OSError):
        os.setgroups([])
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID)
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
    _hide_cgroup2_controllers()
    pid = os.fork()
    if pid:
        # The first child is pid 1 of the new pid namespace; mirror its fate.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    linux.set_parent_death_signal(signal.SIGKILL)
    # A private /proc for this pid namespace so that runtimes see their own children.
    with contextlib.suppress(OSError):
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV, None)


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
            linux.mount("tmpfs", unified, "tmpfs", 0, "size=4k")

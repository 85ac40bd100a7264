"""OCI runtime-spec config.json for one RUN step (runtime-spec 1.0.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pybuild.builder.executor.protocol import IdExtent

# Docker's default capability set, which BuildKit also gives RUN steps.
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)
DEFAULT_HOSTNAME = "buildkitsandbox"


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecMount:
    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.destination, "type": self.type, "source": self.source,
                "options": list(self.options)}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    hostname: str = DEFAULT_HOSTNAME
    network: str = "none"  # none | host (default is resolved by the executor)
    insecure: bool = False
    mounts: tuple[SpecMount, ...] = field(default=())


def base_mounts(*, new_netns: bool) -> list[SpecMount]:
    mounts = [
        SpecMount(destination="/proc", type="proc", source="proc",
                  options=("nosuid", "noexec", "nodev")),
        SpecMount(destination="/dev", type="tmpfs", source="tmpfs",
                  options=("nosuid", "strictatime", "mode=755", "size=65536k")),
        SpecMount(destination="/dev/pts", type="devpts", source="devpts",
                  options=("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
        SpecMount(destination="/dev/shm", type="tmpfs", source="shm",
                  options=("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
        SpecMount(destination="/dev/mqueue", type="mqueue", source="mqueue",
                  options=("nosuid", "noexec", "nodev")),
    ]
    if new_netns:
        mounts.append(SpecMount(destination="/sys", type="sysfs", source="sysfs",
                                options=("nosuid", "noexec", "nodev", "ro")))
    else:
        # sysfs cannot be mounted in a user namespace that does not own the netns.
        mounts.append(SpecMount(destination="/sys", type="bind", source="/sys",
                                options=("rbind", "nosuid", "noexec", "nodev", "ro")))
    return mounts


def make_config(spec: StepSpec, *, rootfs: str,
                id_extents: Sequence[IdExtent]) -> dict[str, Any]:
    caps = list(DEFAULT_CAPS)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
    if spec.network != "host":
        namespaces.append({"type": "network"})
    mappings = [{"containerID": e.container_id, "hostID": e.host_id, "size": e.size}
                for e in id_extents]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "uidMappings": mappings,
        "gidMappings": mappings,
    }
    if not spec.insecure:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": spec.uid, "gid": spec.gid,
                     "additionalGids": list(spec.additional_gids)},
            "args": list(spec.args),
            "env": list(spec.env),
            "cwd": spec.cwd,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": not spec.insecure,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": spec.hostname,
        "mounts": [m.to_json() for m in
                   [*base_mounts(new_netns=spec.network != "host"), *spec.mounts]],
        "linux": linux,
    }

"""Which OCI runtime runs a build's steps: `--runtime`, or probed once and remembered."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pybuild.builder.executor.protocol import IdExtent, ProbeRuntime, RuntimeProbe
from pybuild.builder.executor.rpc import SandboxError
from pybuild.errors import UserError

Prober = Callable[[ProbeRuntime], Awaitable[RuntimeProbe]]

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

    async def choose(self, probe: Prober, scratch: str, state_dir: str,
                     id_extents: tuple[IdExtent, ...]) -> tuple[str, str]:
        """(runtime, fallback) paths; fallback is "" when --runtime pinned one. `probe`
        runs a probe container in the sandbox."""
        if self.requested:
            return self.requested, ""
        async with self._lock:
            if self._choice is None:
                self._choice = await self._probe(probe, scratch, state_dir, id_extents)
            return self._choice

    async def _probe(self, probe: Prober, scratch: str, state_dir: str,
                     id_extents: tuple[IdExtent, ...]) -> tuple[str, str]:
        installed = self._installed()
        remembered = self._remembered(installed)
        if remembered:
            others = [p for p in installed if p != remembered]
            return remembered, others[0] if others else ""
        errors: list[str] = []
        for i, path in enumerate(installed):
            res = await probe(ProbeRuntime(runtime=path, scratch=f"{scratch}-{i}",
                                           state_dir=state_dir, id_extents=id_extents))
            if res.ok:
                self._remember(path, "; ".join(errors) or "first choice")
                others = [p for p in installed if p != path]
                if errors:
                    self.notices.append(f"OCI runtime {os.path.basename(path)} chosen: "
                                        + "; ".join(errors))
                return path, others[0] if others else ""
            errors.append(f"{os.path.basename(path)} does not work here: {res.error}")
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


def _host_memo_path() -> Path:
    """The per-user cache of runtime probes: $XDG_CACHE_HOME/pybuild/runtime-probes.json."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pybuild" / "runtime-probes.json"

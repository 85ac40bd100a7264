"""The image configuration (OCI image-spec config.md; Docker's superset of fields)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from pybuild.canonical import canonical_json
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.oci.platform import Platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        return cls(
            created=str(data.get("created", "")),
            created_by=str(data.get("created_by", "")),
            author=str(data.get("author", "")),
            comment=str(data.get("comment", "")),
            empty_layer=bool(data.get("empty_layer", False)),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.created_by:
            out["created_by"] = self.created_by
        if self.author:
            out["author"] = self.author
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Healthcheck:
    test: tuple[str, ...] = ()
    interval: int = 0  # nanoseconds, as Docker stores them
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Healthcheck:
        return cls(
            test=tuple(data.get("Test") or ()),
            interval=int(data.get("Interval", 0) or 0),
            timeout=int(data.get("Timeout", 0) or 0),
            start_period=int(data.get("StartPeriod", 0) or 0),
            start_interval=int(data.get("StartInterval", 0) or 0),
            retries=int(data.get("Retries", 0) or 0),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerConfig:
    """The `config` object of an image config: what a container started from it gets."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    shell: tuple[str, ...] = ()
    on_build: tuple[str, ...] = ()
    args_escaped: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ContainerConfig:
        if not data:
            return cls()
        ep = data.get("Entrypoint")
        cmd = data.get("Cmd")
        hc = data.get("Healthcheck")
        return cls(
            user=str(data.get("User") or ""),
            exposed_ports=tuple(sorted((data.get("ExposedPorts") or {}).keys())),
            env=tuple(data.get("Env") or ()),
            entrypoint=tuple(ep) if ep is not None else None,
            cmd=tuple(cmd) if cmd is not None else None,
            volumes=tuple(sorted((data.get("Volumes") or {}).keys())),
            working_dir=str(data.get("WorkingDir") or ""),
            labels=tuple(sorted((data.get("Labels") or {}).items())),
            stop_signal=str(data.get("StopSignal") or ""),
            healthcheck=Healthcheck.from_json(hc) if isinstance(hc, dict) else None,
            shell=tuple(data.get("Shell") or ()),
            on_build=tuple(data.get("OnBuild") or ()),
            args_escaped=bool(data.get("ArgsEscaped", False)),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_json()
        if self.shell:
            out["Shell"] = list(self.shell)
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.args_escaped:
            out["ArgsEscaped"] = True
        return out

    def env_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    architecture: str
    os: str = "linux"
    variant: str = ""
    os_version: str = ""
    created: str = ""
    author: str = ""
    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    # Fields pybuild does not model, kept verbatim (canonical JSON) so nothing is lost.
    extra_json: str = "{}"

    _KNOWN = frozenset(
        {"architecture", "os", "variant", "os.version", "created", "author", "config",
         "rootfs", "history"}
    )

    @classmethod
    def parse(cls, data: bytes, *, where: str = "config") -> ImageConfig:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{where}: not valid JSON ({exc})", code="bad-config") from None
        if not isinstance(raw, dict):
            raise UserError(f"{where}: not a JSON object", code="bad-config")
        rootfs = raw.get("rootfs") or {}
        try:
            diff_ids = tuple(Digest(str(d)) for d in rootfs.get("diff_ids") or ())
            extra = {k: v for k, v in raw.items() if k not in cls._KNOWN}
            return cls(
                architecture=str(raw.get("architecture", "")),
                os=str(raw.get("os", "linux")),
                variant=str(raw.get("variant", "")),
                os_version=str(raw.get("os.version", "")),
                created=str(raw.get("created", "")),
                author=str(raw.get("author", "")),
                config=ContainerConfig.from_json(raw.get("config")),
                diff_ids=diff_ids,
                history=tuple(History.from_json(h) for h in raw.get("history") or ()),
                extra_json=canonical_json(extra).decode(),
            )
        except (TypeError, AttributeError, ValueError) as exc:
            raise UserError(f"{where}: invalid image config ({exc})", code="bad-config") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.extra_json)
        out["architecture"] = self.architecture
        out["os"] = self.os
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out["config"] = self.config.to_json()
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.history:
            out["history"] = [h.to_json() for h in self.history]
        return out

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def platform(self) -> Platform:
        return Platform(
            os=self.os, architecture=self.architecture, variant=self.variant,
            os_version=self.os_version,
        )

    def replace(self, **changes: Any) -> ImageConfig:
        return replace(self, **changes)

"""Platform values ("linux/arm64/v8") and their normalisation, as containerd does it."""

from __future__ import annotations

import platform as _host_platform
from dataclasses import dataclass, field
from typing import Any

from pybuild.errors import UserError

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    os: str = "linux"
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if not text.strip() or len(parts) > 3 or any(not p for p in parts):
            raise UserError(
                f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64",
                code="bad-platform",
            )
        if len(parts) == 1:
            if parts[0] in ("linux", "windows", "darwin", "freebsd"):
                return cls.normalize(os=parts[0], architecture=host().architecture)
            return cls.normalize(os="linux", architecture=parts[0])
        return cls.normalize(
            os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else ""
        )

    @classmethod
    def normalize(
        cls, *, os: str, architecture: str, variant: str = "", os_version: str = ""
    ) -> Platform:
        """containerd's rules: aliases, arm64 "v8" is the default variant, arm defaults to v7."""
        arch = _ARCH_ALIASES.get(architecture, architecture)
        if arch == "arm64" and variant in ("8", "v8", "v8.0"):
            variant = ""
        elif arch == "arm" and variant in ("", "7"):
            variant = "v7"
        elif arch == "amd64" and variant == "v1":
            variant = ""
        return cls(os=os, architecture=arch, variant=variant, os_version=os_version)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Platform:
        return cls(
            os=str(data.get("os", "linux")),
            architecture=str(data.get("architecture", "")),
            variant=str(data.get("variant", "")),
            os_version=str(data.get("os.version", "")),
            os_features=tuple(data.get("os.features", ()) or ()),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    def matches(self, other: Platform) -> bool:
        """True if an image for `other` can serve a request for `self`."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        mine = Platform.normalize(os=self.os, architecture=self.architecture,
                                  variant=self.variant)
        theirs = Platform.normalize(os=other.os, architecture=other.architecture,
                                    variant=other.variant)
        return not mine.variant or mine.variant == theirs.variant

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s


def host() -> Platform:
    machine = _host_platform.machine().lower()
    arch = _ARCH_ALIASES.get(machine, machine)
    return Platform.normalize(os="linux", architecture=arch)

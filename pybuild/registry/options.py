"""The values that say how to reach registries: `RegistryOptions` and `RetryPolicy`.

A light module on purpose: the CLI builds these for every build, before it knows whether the
build will talk to a registry, so nothing here imports httpx, ssl or a TOML parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from random import Random

    from pybuild.registry.endpoints import RegistryMirror
    from pybuild.registry.registries_conf import RegistriesConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one request (or one blob transfer) is retried."""

    attempts: int = 5  # tries in all, the first included; 1 disables retries
    base_delay: float = 0.5  # seconds before the first retry; doubled for each further one
    max_delay: float = 10.0  # cap of the computed wait
    max_retry_after: float = 60.0  # a registry asking to wait longer than this gets an error

    def delay(self, failures: int, retry_after: float | None = None,
              rng: Random | None = None) -> float:
        """Seconds to wait before try number `failures + 1` (failures >= 1)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, failures - 1)))
        # "equal jitter": at least half the backoff, so retries of many concurrent transfers
        # spread out without any of them retrying at once
        if rng is None:
            import random  # (not at import time: the CLI builds options for every build)

            rng = random.Random()
        jitter = rng.uniform(0, ceiling / 2)
        return float(ceiling / 2 + jitter)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryOptions:
    """How to reach and authenticate to registries (one value for a whole pull or push)."""

    creds: str | None = field(default=None, repr=False)  # "user:password" (--creds)
    auth_files: tuple[Path, ...] | None = None  # None: the standard lookup (locations)
    insecure: bool = False  # allow plain HTTP and unverified TLS (--insecure)
    ca_cert: Path | None = None  # extra CA bundle (PEM) to trust
    max_transfers: int = 4  # concurrent blob uploads/downloads
    chunk_size: int = 16 << 20  # blobs larger than this are pushed in PATCH chunks this big
    timeout: float = 120.0  # seconds without progress on one request
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # transient faults
    certs_dirs: tuple[Path, ...] = ()  # certs.d bases (locations.default_certs_dirs)
    helper_path: str | None = None  # PATH for docker-credential-* (None: this process's)
    # registries.conf (mirrors, insecure, blocked), parsed, or its files (parsed on use)
    registries: RegistriesConfig | RegistriesConfFiles | None = None
    mirrors: tuple[RegistryMirror, ...] = ()  # --registry-mirror, tried before the origin
    blob_index: Path | None = None  # where pushed/pulled blobs were seen (cross-repo mounts)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistriesConfFiles:
    """The files to read, when a registry is first used (`locations.registries_conf_locations`
    chooses them): a broken registries.conf fails the pulls and pushes it would steer, not
    every command."""

    main: Path | None
    dropin_dirs: tuple[Path, ...] = ()

    def load(self) -> RegistriesConfig:
        from pybuild.registry.registries_conf import load_cached

        return load_cached(self.main, self.dropin_dirs)

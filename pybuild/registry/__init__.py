"""pybuild.registry: a distribution-spec client (auth, resolve, pull, push, mount).

Async API (the solver is asyncio): `resolve`, `pull`, `push`. Blocking wrappers for code
that is not in a coroutine (the CLI, the frontend's synchronous resolver): `resolve_sync`,
`pull_sync`, `push_sync` (see `sync.py`). Login and logout are `login.py`'s, manifest lists
`imagetools.py`'s.

The names below are imported on first use (PEP 562): the CLI builds `RegistryOptions` for
every build, and a build that never meets a registry must not pay for importing httpx.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    # httpx's __init__ imports its own command-line tool (httpx._main: click, pygments and
    # rich's console) whenever those happen to be installed: 0.1-0.2 s on every registry
    # command. pybuild never runs that tool; an empty stand-in keeps `httpx.main` defined.
    _cli = types.ModuleType("httpx._main")
    setattr(_cli, "main", lambda: None)  # noqa: B010
    sys.modules["httpx._main"] = _cli

if TYPE_CHECKING:
    from pybuild.registry.auth import Credentials, parse_www_authenticate
    from pybuild.registry.authfiles import load_credentials
    from pybuild.registry.client import RegistryClient, api_host, is_loopback
    from pybuild.registry.errors import (
        ManifestBlobUnknownError,
        RegistryAuthError,
        RegistryError,
        RegistryNotFoundError,
        RegistryTLSError,
        RegistryUnreachableError,
    )
    from pybuild.registry.options import RegistryOptions, RetryPolicy
    from pybuild.registry.pull import ProgressCallback, TransferEvent, pull, pull_blobs, resolve
    from pybuild.registry.push import push
    from pybuild.registry.sync import (
        pull_blobs_sync,
        pull_sync,
        push_sync,
        resolve_sync,
        run_sync,
    )

_WHERE = {
    "Credentials": "auth", "parse_www_authenticate": "auth",
    "load_credentials": "authfiles",
    "RegistryClient": "client", "api_host": "client", "is_loopback": "client",
    "ManifestBlobUnknownError": "errors", "RegistryAuthError": "errors",
    "RegistryError": "errors", "RegistryNotFoundError": "errors",
    "RegistryTLSError": "errors", "RegistryUnreachableError": "errors",
    "RegistryOptions": "options", "RetryPolicy": "options",
    "ProgressCallback": "pull", "TransferEvent": "pull", "pull": "pull",
    "pull_blobs": "pull", "resolve": "pull",
    "push": "push",
    "pull_blobs_sync": "sync", "pull_sync": "sync", "push_sync": "sync",
    "resolve_sync": "sync", "run_sync": "sync",
}

__all__ = [
    "Credentials", "ManifestBlobUnknownError", "ProgressCallback", "RegistryAuthError",
    "RegistryClient", "RegistryError", "RegistryNotFoundError", "RegistryOptions",
    "RegistryTLSError", "RegistryUnreachableError", "RetryPolicy", "TransferEvent",
    "api_host", "is_loopback", "load_credentials", "parse_www_authenticate", "pull",
    "pull_blobs", "pull_blobs_sync", "pull_sync", "push", "push_sync", "resolve",
    "resolve_sync", "run_sync",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pybuild.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pybuild.registry.{module}"), name)
    globals()[name] = value
    return value

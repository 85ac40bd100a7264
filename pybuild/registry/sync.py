"""Blocking wrappers for code that is not in a coroutine (the CLI, the frontend's synchronous
resolver): `resolve_sync`, `pull_sync`, `push_sync`; called from inside a running event loop
they run the coroutine on a private loop in a worker thread instead of failing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from pybuild.content.store import ContentStore
from pybuild.digest import Digest
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference
from pybuild.registry.options import RegistryOptions
from pybuild.registry.pull import ProgressCallback, pull, pull_blobs, resolve
from pybuild.registry.push import push

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from synchronous code (even inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=worker, name="pybuild-registry", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def resolve_sync(ref: Reference | str, *,
                 options: RegistryOptions | None = None) -> tuple[Descriptor, bytes]:
    return run_sync(resolve(ref, options=options))


def pull_sync(ref: Reference | str, store: ContentStore, *,
              platforms: Sequence[Platform] | None = None,
              options: RegistryOptions | None = None,
              progress: ProgressCallback | None = None) -> Descriptor:
    return run_sync(pull(ref, store, platforms=platforms, options=options, progress=progress))


def pull_blobs_sync(ref: Reference | str, blobs: Sequence[Descriptor], store: ContentStore,
                    *, options: RegistryOptions | None = None) -> None:
    run_sync(pull_blobs(ref, blobs, store, options=options))


def push_sync(store: ContentStore, descriptor: Descriptor, ref: Reference | str, *,
              options: RegistryOptions | None = None, mount_from: Sequence[str] = (),
              progress: ProgressCallback | None = None) -> Digest:
    return run_sync(push(store, descriptor, ref, options=options, mount_from=mount_from,
                         progress=progress))

"""Tearing down what a request made: one exit stack per request, and tree removal."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from typing import Any, Literal

from pybuild.builder.executor.daemon import linux


class Teardown(contextlib.ExitStack):
    """An ExitStack that never swallows the exception it unwinds for (so that a `return`
    inside it is the function's only way out, for mypy too)."""

    def __exit__(self, *exc: Any) -> Literal[False]:
        super().__exit__(*exc)
        return False


def quiet_umount(path: str) -> None:
    """Unmount `path`, if it is still mounted (a teardown step)."""
    with contextlib.suppress(OSError):
        linux.umount(path)


def rmtree(path: str) -> None:
    """Remove `path` (a tree, a file or a symlink) if it exists; dirs a step made
    unwritable or unreadable (mode 000, chmod -w) are opened up on the way."""

    def onerror(func: Callable[..., Any], p: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=onerror)
    elif os.path.lexists(path):
        os.unlink(path)

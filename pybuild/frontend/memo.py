"""The frontend's result, memoized.

The frontend is a pure function of its inputs and of the images its names resolve to, so
its result is kept on disk with those names and digests, and reused while the image store
still maps each name to the same digest: a no-op rebuild then skips parsing, expansion and
their imports (this module imports none of them; `FrontendInputs.options` does, on a miss).

The key is the pickled `FrontendInputs` plus a stamp of the frontend's own source files
(a development install edits them; an installed one never does).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pybuild.frontend.dockerfile2llb.options import FrontendOptions
    from pybuild.frontend.resolver import NamedContext
    from pybuild.frontend.results import BuildWarning
    from pybuild.llb.definition import Definition
    from pybuild.oci.config import ImageConfig
    from pybuild.oci.platform import Platform

MEMO_VERSION = 1
# The packages whose code decides the frontend's output.
_SOURCES = ("frontend", "llb", "oci")
_SOURCE_FILES = ("digest.py", "errors.py", "__init__.py")


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendInputs:
    """Everything the frontend's result depends on, besides the images it resolves."""

    dockerfile: bytes
    filename: str
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platform: Platform | None = None
    labels: tuple[tuple[str, str], ...] = ()
    dockerignore: tuple[str, ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = "default"
    named_contexts: tuple[tuple[str, NamedContext], ...] = ()
    multi_platform: bool = False  # several platforms: progress names carry the platform
    # The pull policy ("missing", "always", "never"): it changes what names resolve to.
    pull: str = "missing"

    def options(self) -> FrontendOptions:
        from pybuild.frontend.dockerfile2llb.options import FrontendOptions

        return FrontendOptions(
            dockerfile=self.dockerfile, filename=self.filename, build_args=self.build_args,
            target=self.target, platform=self.platform, labels=self.labels,
            dockerignore=self.dockerignore, no_cache=self.no_cache,
            no_cache_filter=self.no_cache_filter, network=self.network,
            named_contexts=self.named_contexts, multi_platform=self.multi_platform)


class Compiled(NamedTuple):
    """The part of the frontend's result a build uses (plain values: unpickling it must
    not import the frontend's modules; `frontend.results` is a small one on purpose)."""

    definition: Definition
    config: ImageConfig
    stage_name: str
    warnings: tuple[BuildWarning, ...]
    unused_build_args: tuple[str, ...] = ()


def memo_path(directory: Path, inputs: FrontendInputs) -> Path:
    key = hashlib.sha256(pickle.dumps((MEMO_VERSION, source_stamp(), inputs),
                                      protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    return directory / key


def load(path: Path, current_digest: Callable[[str], str]) -> Compiled | None:
    """The memo at `path` if every image it resolved still has the digest it had."""
    try:
        with open(path, "rb") as f:
            compiled, resolved = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            ValueError, TypeError):
        return None
    if not isinstance(compiled, Compiled):
        return None
    if all(current_digest(ref) == digest for ref, digest in resolved):
        return compiled
    return None


def save(path: Path, compiled: Compiled, resolved: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump((compiled, tuple(sorted(resolved.items()))), f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def ran_marker(memo: Path) -> Path:
    """Present when the last build of this frontend result ran steps."""
    return memo.with_name(memo.name + ".ran")


def mark_ran(memo: Path, ran: bool) -> None:
    marker = ran_marker(memo)
    try:
        if ran:
            marker.touch()
        elif marker.exists():
            marker.unlink()
    except OSError:
        pass


_stamp: str | None = None


def source_stamp() -> str:
    """Changes whenever the frontend's code does."""
    global _stamp
    if _stamp is None:
        import sys

        # The root package is loaded already (this module is in it); reading its version
        # is not a dependency on what it re-exports (import-linter's frontend contract).
        base = Path(__file__).resolve().parents[1]
        stamps = [str(getattr(sys.modules.get("pybuild"), "__version__", ""))]
        for name in _SOURCE_FILES:
            stamps.append(f"{name}:{os.stat(base / name).st_mtime_ns}")
        for sub in _SOURCES:
            for dirpath, dirnames, filenames in os.walk(base / sub):
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                rel = os.path.relpath(dirpath, base)
                stamps.extend(f"{rel}/{n}:{os.stat(os.path.join(dirpath, n)).st_mtime_ns}"
                              for n in filenames if n.endswith(".py"))
        _stamp = ",".join(sorted(stamps))
    return _stamp

"""Start-up work that overlaps with a build instead of delaying it; the only module that
knows these tricks.

A no-op rebuild takes ~0.1 s, so every ~10 ms of start-up shows:
- The sandbox daemon is an interpreter with its own imports (~0.1 s). A build that will
  probably run steps spawns it first thing (`Prestart`, before the CLI has even parsed its
  arguments), so its start overlaps with pybuild's imports and the frontend.
- While the frontend runs, the daemon already unpacks the base images' layers into
  snapshots (`Warmup.prefetcher`) and picks its snapshotter; the solver's own requests
  then find them done.
- asyncio is imported without ssl (~10 ms); a registry is the only user of TLS, and
  `enable_tls` gives asyncio its ssl module back before one is used.
Each guess is only a guess: a wrong one costs a discarded daemon, never a wrong result.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

TYPE_CHECKING = False  # (not typing's: the CLI imports this module before anything else)
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pybuild.builder.executor.idmap import IdMap
    from pybuild.builder.executor.spawn import DaemonProcess
    from pybuild.content.store import ContentStore
    from pybuild.oci.config import ImageConfig
    from pybuild.oci.descriptor import Manifest


class Prestart:
    """For `pybuild build`: a sandbox daemon started before anything else, when this
    command line probably runs steps (the last build with the same command line and
    working directory did, or none is known)."""

    def __init__(self, argv: list[str]) -> None:
        import zlib

        root = _option(argv, "--root") or os.environ.get("PYBUILD_ROOT", "")
        if not root:  # (pathlib and its imports, only when needed)
            from pybuild.content.paths import default_root

            root = str(default_root())
        key = zlib.crc32("\0".join([os.getcwd(), *argv]).encode())
        self.marker = os.path.join(os.path.abspath(root), "cache", "cli-runs", f"{key:08x}")
        self.daemon: DaemonProcess | None = None
        try:
            with open(self.marker, "rb") as f:
                self._last = f.read()
        except OSError:
            self._last = b""
        if self._last != b"0":
            from pybuild.builder.executor.spawn import DaemonProcess

            try:
                self.daemon = DaemonProcess()
            except OSError:
                pass  # a guess only: the build starts its own when it needs one

    def warmup(self) -> Warmup:
        """The warm-up to hand to the build (it takes over the daemon)."""
        return Warmup(self.daemon, on_finish=self.record)

    def record(self, ran: bool) -> None:
        """Remember whether this command line ran steps."""
        if (b"1" if ran else b"0") == self._last:
            return
        try:
            os.makedirs(os.path.dirname(self.marker), exist_ok=True)
            with open(self.marker, "wb") as f:
                f.write(b"1" if ran else b"0")
        except OSError:
            pass

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.discard()  # a no-op once the build has closed it


def _option(argv: list[str], name: str) -> str:
    """The value of a global option, read before parsing (as argparse will read it)."""
    value = ""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


class Warmup:
    """One build's early sandbox daemon: started when the build will probably run steps,
    fed the base layers to unpack while the frontend runs, then handed to the sandbox
    (`take_daemon`). `on_finish(ran)` learns whether the build ran steps."""

    def __init__(self, daemon: DaemonProcess | None = None, *, enabled: bool = True,
                 on_finish: Callable[[bool], None] | None = None) -> None:
        """`enabled=False`: start no daemon early (the sandbox starts its own when the
        first step needs it); for callers whose current thread may not outlive the build,
        since the daemon dies with the thread that started it."""
        self._daemon = daemon
        self._enabled = enabled
        self._idmap: IdMap | None = None
        self._on_finish = on_finish
        self._requested: set[str] = set()  # snapshot dirs asked for (each stage re-resolves)

    def begin(self, idmap: IdMap, *, likely_runs: bool) -> None:
        """Start (or keep) the daemon if the build will probably run steps; else drop an
        early one."""
        self._idmap = idmap
        if likely_runs:
            self.start_daemon()
        elif self._daemon is not None:
            self._daemon.discard()
            self._daemon = None

    def start_daemon(self) -> None:
        """Start the daemon now (the build will probably need it). A failure to start it
        shows when it is needed."""
        assert self._idmap is not None, "begin() first"
        if not self._enabled:
            return
        if self._daemon is None:
            from pybuild.builder.executor.spawn import DaemonProcess

            try:
                self._daemon = DaemonProcess()
            except OSError:
                return
        self._daemon.handshake(self._idmap)

    def probe_snapshotter(self, scratch: Path) -> None:
        """Have the daemon pick its snapshotter first thing (in `scratch`, the build
        namespace's area), before a base image arrives to unpack."""
        if self._daemon is not None:
            from pybuild.builder.executor.protocol import ProbeSnapshotter

            self._daemon.prefetch(ProbeSnapshotter(dir=str(scratch)))

    def prefetcher(self, store: ContentStore,
                   snapshots: Path) -> Callable[[Manifest, ImageConfig], None]:
        """For the resolver: have the daemon unpack a resolved image's layers into
        snapshots (named as the solver names them) as soon as it is up, while the
        frontend and the builder's imports go on."""
        def on_image(manifest: Manifest, config: ImageConfig) -> None:
            if self._daemon is None:
                return
            from pybuild.builder.executor.protocol import Apply, LayerBlob, snapshot_name

            for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=False):
                dest = str(snapshots / snapshot_name(diff_id))
                if (dest in self._requested or os.path.isdir(dest)
                        or not store.has(desc.digest)):
                    continue
                self._requested.add(dest)
                layer = LayerBlob(path=str(store.blob_path(desc.digest)), digest=desc.digest,
                                  size=desc.size, diff_id=diff_id)
                self._daemon.prefetch(Apply(layer=layer, dest=dest))

        return on_image

    def take_daemon(self) -> DaemonProcess | None:
        """The early daemon, for the sandbox to adopt (None if none was started)."""
        daemon, self._daemon = self._daemon, None
        return daemon

    def finish(self, ran: bool | None) -> None:
        """The build is over: `ran` says whether it ran steps (None: it failed)."""
        if self._daemon is not None:
            self._daemon.discard()  # the build never got to it
            self._daemon = None
        if self._on_finish is not None and ran is not None:
            self._on_finish(ran)


def asyncio_without_ssl() -> ModuleType:
    """asyncio, imported (if nothing has yet) without its TLS support: loading ssl costs
    ~10 ms of every start, and only registries need it (see `enable_tls`)."""
    if "asyncio" not in sys.modules and "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` fails meanwhile
        try:
            import asyncio
        finally:
            del sys.modules["ssl"]
    import asyncio

    return asyncio


def enable_tls() -> None:
    """Give asyncio the ssl module that `asyncio_without_ssl` kept from it, before a
    registry is used (httpx does its own TLS, but nothing of asyncio's must be left
    half-enabled)."""
    import importlib
    import ssl

    for name in ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            if name == "asyncio.sslproto":
                importlib.reload(module)  # it derives module constants from ssl
            else:
                vars(module)["ssl"] = ssl

"""`Builder`: builds and the store's images, over one pybuild root.

Everything a build does (frontend, solve, image, names, outputs, pushes, cache export,
garbage collection) happens inside `build`; see `job` for the steps and `docs/api.md`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pybuild.api import inputs as prep
from pybuild.builder.events import EventSink, Notice, discard
from pybuild.errors import PybuildError, UserError
from pybuild.request import BuildRequest, BuildResult, PushReport
from pybuild.root import Root

if TYPE_CHECKING:

    from pybuild.calls import CallName
    from pybuild.exporters.base import ImageOptions, OutputSpec
    from pybuild.exporters.run import ExportReport
    from pybuild.frontend.subrequests import LintReport, Outline, TargetList
    from pybuild.gc import DiskUsageRow, PrunePolicy, PruneReport
    from pybuild.history import BuildRecorder, HistoryOptions
    from pybuild.image_archives import LoadReport
    from pybuild.llb.definition import Definition
    from pybuild.local_images import HistoryRow, ImageDetails, ImageSummary, Removed
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform
    from pybuild.registry import RegistryOptions
    from pybuild.startup import Warmup

GC_KEEP_STORAGE_ENV = "PYBUILD_GC_KEEP_STORAGE"


class Builder:
    """`root`: a pybuild root (a path, or the default one). `warmup`: the CLI's start-up
    work (an early sandbox daemon, asyncio without ssl); embedders leave it out.
    `gc_keep_storage`: the size the store is kept under after builds (default:
    $PYBUILD_GC_KEEP_STORAGE, else 20 GB)."""

    def __init__(self, root: Root | Path | str | None = None, *, warmup: Warmup | None = None,
                 gc_keep_storage: int | None = None,
                 history: HistoryOptions | None = None) -> None:
        self.root = root if isinstance(root, Root) else Root(root)
        self._warmup = warmup
        self._history = history
        if gc_keep_storage is None and os.environ.get(GC_KEEP_STORAGE_ENV):
            from pybuild.units import parse_size

            gc_keep_storage = parse_size(os.environ[GC_KEEP_STORAGE_ENV])
        self.gc_keep_storage = gc_keep_storage

    # -- builds -------------------------------------------------------------------------

    def build(self, request: BuildRequest, *, on_event: EventSink = discard,
              stdout: BinaryIO | None = None, handle_sigterm: bool = False) -> BuildResult:
        """Build (blocking). `stdout`: where outputs without dest write; `handle_sigterm`:
        SIGTERM cancels the build as Ctrl-C does (for a process that is only this build).
        Remote and tar contexts are fetched or unpacked first (see `contexts`); `load`
        hands the result to podman or docker last."""
        request = prep.read_pipes(request)
        recorder, events = self._record(request, on_event)  # first: every error is in it
        try:
            request, load_options = prep.engine_loads(request)
            prep.check_engine(request)
            prep.remove_stale_iidfile(request.iidfile)
            with prep.local_inputs(request, self.root) as local, prep.ssh_agents(local) as local:
                result = self._build(prep.without_result_files(local), events, recorder, stdout,
                                     handle_sigterm)
            result = self._finish(request, result, load_options, events)
        except BaseException as exc:
            _failed(recorder, exc)
            raise
        return _recorded(recorder, result, on_event)

    def _build(self, request: BuildRequest, on_event: EventSink, recorder: BuildRecorder,
               stdout: BinaryIO | None, handle_sigterm: bool) -> BuildResult:
        from pybuild import job
        from pybuild.startup import Warmup, asyncio_without_ssl

        warmup, self._warmup = self._warmup, None  # its early daemon serves one build
        cli = warmup is not None
        warmup = warmup or Warmup()
        ran: bool | None = None
        try:
            plan = job.plan(request, self.root)
            warmup.begin(plan.idmap, likely_runs=plan.likely_runs)
            job.prepare(plan, self.root, warmup, on_event)
            fes = job.compile(request, self.root, plan, warmup)
            _describe(recorder, plan, fes)
            if cli:
                asyncio = asyncio_without_ssl()
            else:
                import asyncio
            coro = job.run(request, self.root, plan, fes, warmup, on_event, stdout=stdout,
                           gc_keep_storage=self.gc_keep_storage, ref=recorder.ref)
            result: BuildResult = asyncio.run(_terminable(coro) if handle_sigterm else coro)
            ran = bool(result.steps)
            return result
        finally:
            warmup.finish(ran)

    def _finish(self, request: BuildRequest, result: BuildResult,
                load_options: ImageOptions | None, on_event: EventSink) -> BuildResult:
        """After the build: the engine load, then the files that report the result."""
        import dataclasses

        if request.load is not None:
            from pybuild import engines

            platform = None if result.multi_platform else result.config.platform
            names = load_options.names if load_options is not None else ()
            loaded = engines.load(self.root, result.image, names or request.tags,
                                  engine=request.load, platform=platform,
                                  image_id=str(result.config_digest), options=load_options)
            on_event(Notice(f"loaded {result.image.digest} into {loaded.engine}"
                            + (f": {loaded.output}" if loaded.output else "")))
            result = dataclasses.replace(result, loaded=(*result.loaded, loaded.engine))
        prep.write_result_files(request, result)
        return result

    async def build_async(self, request: BuildRequest, *, on_event: EventSink = discard,
                          stdout: BinaryIO | None = None) -> BuildResult:
        """Build without blocking the event loop: the frontend runs in a thread; the
        sandbox daemon starts from the loop's thread when the first step needs it."""
        import asyncio
        import contextlib

        from pybuild import job
        from pybuild.startup import Warmup

        loop = asyncio.get_running_loop()
        request = await asyncio.to_thread(prep.read_pipes, request)
        recorder, events = self._record(request, on_event)

        def threadsafe(event: Any) -> None:
            loop.call_soon_threadsafe(events, event)

        try:
            request, load_options = prep.engine_loads(request)
            prep.check_engine(request)
            prep.remove_stale_iidfile(request.iidfile)
            with contextlib.ExitStack() as stack:
                local_cm = prep.local_inputs(request, self.root)
                local = await asyncio.to_thread(stack.enter_context, local_cm)
                # On this thread: an agent is stopped when the thread that started it ends.
                local = stack.enter_context(prep.ssh_agents(local))
                req = prep.without_result_files(local)
                warmup = Warmup(enabled=False)  # a daemon must be started by a long-lived thread
                plan = await asyncio.to_thread(job.plan, req, self.root)
                warmup.begin(plan.idmap, likely_runs=False)
                await asyncio.to_thread(job.prepare, plan, self.root, warmup, threadsafe)
                fes = await asyncio.to_thread(job.compile, req, self.root, plan, warmup)
                _describe(recorder, plan, fes)
                result = await job.run(req, self.root, plan, fes, warmup, events,
                                       stdout=stdout, gc_keep_storage=self.gc_keep_storage,
                                       ref=recorder.ref)
            result = await asyncio.to_thread(self._finish, request, result, load_options,
                                             threadsafe)
        except BaseException as exc:
            _failed(recorder, exc)
            raise
        return _recorded(recorder, result, on_event)

    def _record(self, request: BuildRequest,
                on_event: EventSink) -> tuple[BuildRecorder, EventSink]:
        """The build's record, and the event sink that feeds it besides `on_event`."""
        from pybuild import recording
        from pybuild.history import HistoryOptions, tee

        if self._history is None:
            self._history = HistoryOptions.from_environ(os.environ)
        recorder = recording.start(self.root, request, self._history, os.environ)
        return recorder, tee(on_event, recorder)

    def call(self, request: BuildRequest,
             name: CallName) -> Outline | TargetList | LintReport:
        """A frontend subrequest instead of a build (`docker buildx build --call=NAME`):
        "outline" (the build args, secrets and SSH ids the target uses), "targets" (the
        stages) or "check" (the build checks, over every stage unless a target is
        given). Nothing is built, exported or tagged; the answer's `to_text()` and
        `to_json()` are what buildx prints (a check's `status_code` is buildx's exit
        status)."""
        from pybuild import calls

        with prep.local_inputs(request, self.root) as local:
            return calls.run(local, self.root, name)

    def definition(self, request: BuildRequest) -> Definition:
        """The op DAG of a build's (first) platform, without building it."""
        from pybuild import job
        from pybuild.startup import Warmup

        with prep.local_inputs(request, self.root) as local:
            plan = job.plan(local, self.root)
            warmup = Warmup(enabled=False)
            warmup.begin(plan.idmap, likely_runs=False)
            return job.compile(local, self.root, plan, warmup)[0].definition

    # -- images -------------------------------------------------------------------------

    def images(self) -> list[ImageSummary]:
        from pybuild import local_images

        return local_images.summaries(self.root)

    def inspect(self, image: str, platform: Platform | None = None) -> ImageDetails:
        """An image by name, `name@digest`, ID or digest (a unique prefix will do)."""
        from pybuild import local_images

        return local_images.details(self.root, image, platform)

    def history(self, image: str, platform: Platform | None = None) -> list[HistoryRow]:
        """The image's history, newest first (`docker history`)."""
        from pybuild import local_images

        return local_images.history(self.root, image, platform)

    def tag(self, source: str, target: str) -> None:
        from pybuild import local_images

        local_images.tag(self.root, source, target)

    def untag(self, name: str) -> Descriptor:
        """Remove one name (the image's blobs go with the next prune)."""
        from pybuild import local_images

        return local_images.untag(self.root, name)

    def remove(self, image: str, *, force: bool = False) -> Removed:
        """`rmi`: remove a name; by ID or digest, the image's only name (or with `force`
        every name). The blobs go with the next prune."""
        from pybuild import local_images

        return local_images.remove(self.root, image, force=force)

    def load(self, source: str | Path | BinaryIO, tags: tuple[str, ...] = ()) -> LoadReport:
        """Import every image of an OCI layout or archive or a docker archive (a path,
        or a stream such as stdin), named `tags` or as the archive names it."""
        from pybuild import image_archives

        return image_archives.load(self.root, source, tags)

    def save(self, images: list[str], dest: str | BinaryIO, *,
             platform: Platform | None = None) -> list[tuple[Descriptor, tuple[str, ...]]]:
        """`docker save`: several images into one docker archive."""
        from pybuild import image_archives

        return image_archives.save(self.root, images, dest, platform=platform)

    def import_rootfs(self, source: str | Path | BinaryIO, names: tuple[str, ...] = (), *,
                      changes: tuple[str, ...] = (), message: str = "",
                      platform: Platform | None = None) -> Descriptor:
        """`docker import`: a root filesystem tarball becomes a one-layer image;
        `changes` are Dockerfile instructions (CMD, ENV, ...) for its config."""
        from pybuild import image_archives

        return image_archives.import_rootfs(self.root, source, names, changes=changes,
                                            message=message, platform=platform)

    def export(self, image: str | Descriptor, output: OutputSpec, *,
               platform: Platform | None = None, stdout: BinaryIO | None = None,
               compression: str = "gzip",
               warn: Callable[[str], None] | None = None) -> ExportReport:
        """Write a stored image (a name, an ID, a digest, or a descriptor in the store) to
        `output`; `warn` gets what the exporter left out (e.g. device nodes for type=local)."""
        from pybuild import local_images
        from pybuild.exporters.run import export
        from pybuild.oci.reference import Reference

        names: tuple[str, ...] = ()
        if isinstance(image, str):  # a name, an ID or a digest
            name, desc, manifest = local_images.resolve(self.root, image, platform)
            names = (Reference.parse(name).familiar,) if name else ()
            if platform is not None:
                desc = manifest
        else:
            desc = image
        return export(self.root.content, desc, output, names=names, platform=platform,
                      stdout=stdout, compression=compression,
                      compression_memo=self.root.compression_memo, warn=warn)

    # -- registries ---------------------------------------------------------------------

    def pull(self, ref: str, platforms: list[Platform] | None = None, *,
             registry: RegistryOptions | None = None) -> Descriptor:
        """Pull into the store (`platforms` None: all of them)."""
        from pybuild import distribution
        from pybuild.oci.reference import Reference

        return distribution.pull(self.root, Reference.parse(ref), platforms, registry=registry)

    def push(self, image: str, destination: str = "", *,
             registry: RegistryOptions | None = None, compression: str = "gzip",
             platform: Platform | None = None) -> PushReport:
        """Push a stored image (a name, an ID or a digest; `platform`: only that platform
        of a stored index) to `destination` (default: its own name)."""
        from pybuild import distribution, local_images
        from pybuild.oci import mediatypes as mt
        from pybuild.oci.reference import Reference

        rec = local_images.find(self.root, image)
        if not destination and not rec.name:
            raise UserError(f"push {image}: an image found by ID needs a destination",
                            hint="pybuild push IMAGE-ID REGISTRY/NAME:TAG")
        desc = rec.descriptor
        if platform is not None:
            from pybuild.content.walk import resolve_platform

            if desc.media_type not in mt.INDEX_TYPES:
                raise UserError(f"--platform {platform}: {image} is a single-platform image, "
                                "not an index", code="bad-platform")
            desc = resolve_platform(self.root.content, desc, platform, name=image)
        return distribution.push(self.root, desc, Reference.parse(destination or rec.name),
                                 registry=registry, compression=compression)

    # -- space --------------------------------------------------------------------------

    def prune(self, policy: PrunePolicy | None = None) -> PruneReport:
        import asyncio

        return asyncio.run(self.prune_async(policy))

    async def prune_async(self, policy: PrunePolicy | None = None) -> PruneReport:
        from pybuild.gc import PrunePolicy, prune

        return await prune(self.root, policy or PrunePolicy())

    def disk_usage(self) -> list[DiskUsageRow]:
        from pybuild.gc import disk_usage

        return disk_usage(self.root)

    def content_size(self) -> int:
        """Bytes in the content store, writes under way included."""
        return self.root.content.usage().total


def _describe(recorder: BuildRecorder, plan: Any, fes: list[Any]) -> None:
    from pybuild.oci.platform import host

    for inputs, fe in zip(plan.inputs, fes, strict=True):
        recorder.describe_vertices(fe.definition, platform=str(inputs.platform or host()),
                                   dockerfile=plan.dockerfile)


def _recorded(recorder: BuildRecorder, result: BuildResult,
              on_event: EventSink) -> BuildResult:
    """Close the build's record with its outputs."""
    from pybuild import recording

    recorder.finish(outputs=recording.outputs(result))
    for problem in recorder.problems:  # the record's own trouble, never the build's
        on_event(Notice(f"build history: {problem}", level="warning"))
    return result


def _failed(recorder: BuildRecorder, exc: BaseException) -> None:
    recorder.finish(error=exc)
    if isinstance(exc, PybuildError):
        exc.build_ref = recorder.ref


async def _terminable(coro: Any) -> Any:
    """SIGTERM cancels the build like Ctrl-C does: running steps are stopped, mounts and
    scratch dirs removed, nothing half-written kept; asyncio.CancelledError comes out."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)



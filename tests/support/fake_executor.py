"""`FakeExecutor`: an `Executor` without a kernel, for tests of the solver.

Modelled on httpx's `MockTransport`: give it a handler, and every RUN step that no script
matches "runs" it. Steps are never run for real; what they write is a dict of files, and
a commit turns those into a real, deterministic layer tar at the requested output path
(with its true digest, diff_id and sizes), so that the solver ingests it into the content
store as it would a sandbox's layer. Unpacking verifies blobs and diff_ids as the
sandbox does and extracts regular files, dirs and symlinks into the snapshot dir;
`probe_path` is the sandbox's own lookup over those dirs.

    fake = FakeExecutor()
    fake.on("make", exit_code=2, output="make: *** no rule\\n")   # scripted by command
    gate = fake.block("sleep")                                   # held until released
    ...                                                          # run the solver
    await gate.entered.wait(); task.cancel()                     # a cancellation test
    assert fake.commands == ["apt-get update", "make"]
    assert fake.cancelled == ["sleep 100"]

Every call is recorded in `calls` (method name, request), in call order.
"""

from __future__ import annotations

import asyncio
import fnmatch
import gzip
import hashlib
import inspect
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pybuild.builder.executor.lowers import probe_path as probe_lowers
from pybuild.builder.protocols import (
    CommitResult,
    CommitSpec,
    CopyFiles,
    ExecStep,
    ExecutorCapabilities,
    ExecutorNotice,
    FileOpResult,
    FileStep,
    FromLowers,
    FromTar,
    LayerBlob,
    LogSink,
    MakeDir,
    MakeFile,
    PathProbe,
    StepOutcome,
    snapshot_name,
)
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError
from pybuild.layers.decompress import decompressed
from pybuild.layers.tarwriter import LayerWriter
from pybuild.oci import mediatypes

# A layer's content, by absolute path: bytes (a file, mode 0644), a FakeFile, or None
# (a directory).
Files = dict[str, "FakeFile | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeFile:
    data: bytes
    mode: int = 0o644


@dataclass(slots=True)
class FakeRun:
    """What a handler gets: the step, and a way to write files and output."""

    step: ExecStep
    files: Files = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The step's command as written: `sh -c`'s script, else the argv joined."""
        return command_of(self.step)

    def write(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """The step creates (or replaces) the file `path`: it goes into its layer."""
        self.files[_abs(path)] = FakeFile(data=data.encode() if isinstance(data, str) else data,
                                          mode=mode)

    def mkdir(self, path: str) -> None:
        self.files[_abs(path)] = None

    def log(self, text: str) -> None:
        self.output.append(text)


# A handler returns the step's exit code (None: 0), or a coroutine that does.
Handler = Callable[[FakeRun], "int | Awaitable[int | None] | None"]


class Gate:
    """Holds the steps it is set on (`FakeExecutor.block`) until `release()`."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()  # set when a held step has started
        self.count = 0  # how many steps have reached the gate
        self._open = asyncio.Event()

    def release(self) -> None:
        self._open.set()

    async def _pass(self) -> None:
        self.count += 1
        self.entered.set()
        await self._open.wait()


@dataclass(slots=True, kw_only=True)
class Script:
    """How the steps that `match` behave (see `FakeExecutor.on`)."""

    match: Callable[[ExecStep], bool]
    exit_code: int = 0
    output: str = ""
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    delay: float = 0.0
    runtime_error: str = ""
    gate: Gate | None = None
    handler: Handler | None = None


@dataclass(frozen=True, slots=True)
class FakeCall:
    method: str  # "unpack", "run", "apply_files", "commit", "probe_path", "remove", ...
    request: object


def command_of(step: ExecStep) -> str:
    args = step.args
    if len(args) >= 3 and args[1] == "-c" and args[0].endswith("sh"):
        return args[2]
    return " ".join(args)


def _abs(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


def default_handler(run: FakeRun) -> int:
    """A step that writes one file, named and filled after the step's command, user,
    working dir and environment: the same step gives the same layer, another step
    another layer."""
    key = json.dumps([run.step.args, run.step.env, run.step.cwd, run.step.user])
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    run.write(f"/.fake/{name}", f"{run.command}\n")
    return 0


class FakeExecutor:
    """An in-process `Executor`; see the module docstring."""

    def __init__(self, handler: Handler = default_handler, *,
                 capabilities: ExecutorCapabilities | None = None,
                 notices: Sequence[ExecutorNotice] = ()) -> None:
        self.handler = handler
        self.capabilities = capabilities or ExecutorCapabilities()
        self.calls: list[FakeCall] = []
        self.cancelled: list[str] = []  # commands of the steps cancelled while running
        self.scripts: list[Script] = []
        self.pending_notices: list[ExecutorNotice] = list(notices)
        self._started = False
        self._pending: dict[str, Files] = {}  # step dir -> what apply_files made

    # -- scripting ----------------------------------------------------------------------

    def on(self, command: str | Callable[[ExecStep], bool], *, exit_code: int = 0,
           output: str = "", files: Mapping[str, bytes | str] | None = None,
           delay: float = 0.0, runtime_error: str = "",
           handler: Handler | None = None) -> Script:
        """Script the steps whose command contains `command` (or for which it is true):
        their exit code, output, the files they write (default: none), a delay before
        they end, a runtime failure, or a handler of their own. The first matching
        script (in the order they were added) applies."""
        match = command if callable(command) else (lambda s, c=command: c in command_of(s))
        script = Script(match=match, exit_code=exit_code, output=output, files=files or {},
                        delay=delay, runtime_error=runtime_error, handler=handler)
        self.scripts.append(script)
        return script

    def block(self, command: str | Callable[[ExecStep], bool], **behaviour: object) -> Gate:
        """Hold the matching steps (at their start) until the gate is released."""
        gate = Gate()
        script = self.on(command, **behaviour)  # type: ignore[arg-type]
        script.gate = gate
        return gate

    @property
    def runs(self) -> list[ExecStep]:
        return [c.request for c in self.calls if c.method == "run"]  # type: ignore[misc]

    @property
    def commands(self) -> list[str]:
        """The commands of the RUN steps, in the order they started."""
        return [command_of(s) for s in self.runs]

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    # -- the Executor protocol ------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    def start_soon(self) -> None:
        self.calls.append(FakeCall("start_soon", None))
        self._started = True

    async def unpack(self, layer: LayerBlob, dest: str) -> None:
        self._call("unpack", layer)
        if os.path.isdir(dest):
            return
        try:
            with open(layer.path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise NotFoundError(f"layer {layer.digest}: blob {layer.path} is missing") from None
        if len(blob) != layer.size or Digest.from_bytes(blob) != layer.digest:
            raise IntegrityError(f"blob {layer.digest} in the content store: digest mismatch")
        tar = decompressed(io.BytesIO(blob)).read()
        if Digest.from_bytes(tar) != layer.diff_id:
            raise IntegrityError(
                f"layer {layer.digest} is not what its image says: its content hashes to "
                f"{Digest.from_bytes(tar)}, the image config claims diff_id {layer.diff_id}")
        tmp = f"{dest}.tmp-fake"
        os.makedirs(tmp)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            for m in tf.getmembers():
                name = _abs(m.name).lstrip("/")
                if not name or ".." in name.split("/") or \
                        posixpath.basename(name).startswith(".wh."):
                    continue
                target = os.path.join(tmp, name)
                if m.isdir():
                    os.makedirs(target, exist_ok=True)
                elif m.isfile():
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    src = tf.extractfile(m)
                    with open(target, "wb") as out:
                        out.write(src.read() if src else b"")
                    os.chmod(target, m.mode & 0o777)
                elif m.issym():
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.symlink(m.linkname, target)
        os.rename(tmp, dest)

    async def run(self, step: ExecStep, *, on_log: LogSink) -> StepOutcome:
        self._call("run", step)
        self._started = True
        script = next((s for s in self.scripts if s.match(step)), None)
        fake = FakeRun(step=step)
        try:
            if script is not None and script.gate is not None:
                await script.gate._pass()
            if script is not None and script.delay:
                await asyncio.sleep(script.delay)
        except asyncio.CancelledError:
            self.cancelled.append(command_of(step))
            raise
        if script is None or script.handler is not None:
            handler = script.handler if script is not None and script.handler else self.handler
            result = handler(fake)
            if inspect.isawaitable(result):
                result = await result
            code = int(result or 0)
        else:
            code = script.exit_code
            if script.output:
                fake.log(script.output)
            for path, data in script.files.items():
                fake.write(path, data)
        for text in fake.output:
            on_log(text)
        if script is not None and script.runtime_error:
            return StepOutcome(exit_code=1, runtime="fake", runtime_error=script.runtime_error)
        layer = None
        if code == 0 and step.commit is not None:
            layer = self._commit(fake.files, step.commit)
        return StepOutcome(exit_code=code, runtime="fake", layer=layer)

    async def apply_files(self, step: FileStep) -> FileOpResult:
        self._call("apply_files", step)
        self._started = True
        files: Files = {}
        for action in step.actions:
            match action:
                case MakeDir():
                    files[_abs(action.path)] = None
                case MakeFile():
                    files[_abs(action.path)] = FakeFile(data=action.data, mode=action.mode)
                case CopyFiles():
                    files.update(_copied(action))
        self._pending[step.step_dir] = files
        return FileOpResult()

    async def commit(self, step_dir: str, spec: CommitSpec) -> CommitResult:
        self._call("commit", spec)
        return self._commit(self._pending.pop(step_dir, {}), spec)

    async def probe_path(self, lowers: Sequence[str], path: str) -> PathProbe:
        self._call("probe_path", (tuple(lowers), path))
        return probe_lowers(lowers, path)

    async def remove(self, paths: Sequence[str]) -> None:
        self._call("remove", tuple(paths))
        for path in paths:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)

    async def settle(self) -> None:
        self.calls.append(FakeCall("settle", None))

    def take_notices(self) -> list[ExecutorNotice]:
        out, self.pending_notices = self.pending_notices, []
        return out

    # -- internals ------------------------------------------------------------------------

    def _call(self, method: str, request: object) -> None:
        self.calls.append(FakeCall(method, request))

    def _commit(self, files: Files, spec: CommitSpec) -> CommitResult:
        """A deterministic layer of `files` at spec.out, and its snapshot dir."""
        tar = _layer_tar(files, spec.mtime or 0)
        blob = tar
        media_type = mediatypes.OCI_LAYER
        if spec.compression == "gzip":
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
                gz.write(tar)
            blob, media_type = buf.getvalue(), mediatypes.OCI_LAYER_GZIP
        elif spec.compression == "zstd":
            import zstandard

            blob, media_type = zstandard.ZstdCompressor().compress(tar), mediatypes.OCI_LAYER_ZSTD
        Path(spec.out).write_bytes(blob)
        diff_id = Digest.from_bytes(tar)
        if files and spec.snapshot_dir:
            dest = os.path.join(spec.snapshot_dir, snapshot_name(diff_id))
            if not os.path.isdir(dest):
                _write_tree(files, dest)
        return CommitResult(diff_id=diff_id, size=len(tar), digest=Digest.from_bytes(blob),
                            compressed_size=len(blob), media_type=media_type,
                            empty=not files)


def _parents(path: str) -> list[str]:
    out = []
    parent = posixpath.dirname(path)
    while parent != "/":
        out.append(parent)
        parent = posixpath.dirname(parent)
    return out[::-1]


def _layer_tar(files: Files, mtime: int) -> bytes:
    """The layer of `files` (parent dirs included), sorted, as the sandbox's differ
    orders entries (depth first, names sorted)."""
    entries: Files = {}
    for path, entry in files.items():
        for parent in _parents(path):
            entries.setdefault(parent, None)
        entries[path] = entry
    buf = io.BytesIO()
    writer = LayerWriter(buf)
    for path in sorted(entries, key=lambda p: p.split("/")):
        entry = entries[path]
        if entry is None:
            writer.add_dir(path.lstrip("/"), mtime=mtime)
        else:
            writer.add_bytes(path.lstrip("/"), entry.data, mode=entry.mode, mtime=mtime)
    writer.close()
    return buf.getvalue()


def _write_tree(files: Files, dest: str) -> None:
    os.makedirs(dest)
    for path, entry in sorted(files.items()):
        target = os.path.join(dest, path.lstrip("/"))
        if entry is None:
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(entry.data)
        os.chmod(target, entry.mode)


def _copied(action: CopyFiles) -> Files:
    """What a copy puts at its destination, simplified: files and dirs, no owners or
    modes rewritten, wildcards by fnmatch."""
    found: dict[str, FakeFile | None] = {}  # path relative to the copy source -> entry
    match action.source:
        case FromTar(tar=tar):
            with tarfile.open(tar) as tf:
                for m in tf.getmembers():
                    rel = _abs(m.name)
                    if m.isdir():
                        found[rel] = None
                    elif m.isfile():
                        src = tf.extractfile(m)
                        found[rel] = FakeFile(data=src.read() if src else b"",
                                              mode=m.mode & 0o7777)
        case FromLowers(lowers=lowers):
            for lower in reversed(lowers):  # upper ones win
                for dirpath, dirnames, filenames in os.walk(lower):
                    for name in dirnames + filenames:
                        full = os.path.join(dirpath, name)
                        rel = "/" + os.path.relpath(full, lower)
                        st = os.lstat(full)
                        if stat.S_ISDIR(st.st_mode):
                            found[rel] = None
                        elif stat.S_ISREG(st.st_mode):
                            with open(full, "rb") as f:
                                found[rel] = FakeFile(data=f.read(),
                                                      mode=stat.S_IMODE(st.st_mode))
    out: Files = {}
    dest = _abs(action.dest)
    for pattern in action.sources:
        pattern = _abs(pattern)
        roots = [p for p in found if fnmatch.fnmatchcase(p, pattern)] if pattern != "/" else ["/"]
        for root in roots:
            prefix = root.rstrip("/") + "/"  # ("/" itself: everything is below it)
            below = {p: e for p, e in found.items() if p == root or p.startswith(prefix)}
            is_dir = root == "/" or found.get(root) is None
            if is_dir:
                out.setdefault(dest, None)
            for path, entry in below.items():
                if is_dir:
                    rel = posixpath.relpath(path, root)
                    if rel == ".":
                        continue
                    out[posixpath.join(dest, rel)] = entry
                elif action.dest_is_dir or len(roots) > 1:
                    out[posixpath.join(dest, posixpath.basename(path))] = entry
                else:
                    out[dest] = entry
    return out

"""The sandbox's wire protocol: what the client asks the daemon, and what it answers.

Every request and reply is a frozen value class below (a `Record`: a frozen dataclass
without its cost at import), and `encode`/`decode` are the one codec both sides use:
one JSON object per line, each value written with its class name under `"_"`, tuples as
lists, `bytes` as `{"$x": hex}` and `Digest` as `{"$d": …}`, so
that a decoded message is equal to the one encoded (`decode(encode(m)) == m`).

A request travels as `Request(id, call)`; the daemon answers it with any number of
`Reply(id, Log)` (a RUN step's output), at most one `Reply(id, SnapshotterNotice)` (the
build's snapshotter, once per daemon), then exactly one `Reply(id, result)`: the call's
result type (`Call[R]`), or `Failure`.

The step values (`ExecStep`, `FileStep`, the mounts and file actions) are also what the
solver hands an `Executor` (see `pybuild.builder.protocols`).

Keep imports light: the daemon imports this module at its start.
"""

from __future__ import annotations

import json
from typing import Any, Generic, Literal, TypeVar

from pybuild.builder.executor.record import Record, fields_of
from pybuild.digest import Digest
from pybuild.errors import UserError

R = TypeVar("R")
Compression = Literal["gzip", "zstd", "none"]


def snapshot_name(diff_id: str) -> str:
    """The snapshot dir of a layer, under the sandbox's snapshots dir: named by the
    layer's diff_id, which the daemon verified before publishing it under that name."""
    return diff_id.split(":", 1)[-1][:24]


# --- values ------------------------------------------------------------------------------


class IdExtent(Record):
    """One extent of a container's id map, relative to the sandbox's user namespace."""

    container_id: int
    host_id: int
    size: int


class LayerBlob(Record):
    """A layer blob in the content store, with what its image claims about it."""

    path: str
    digest: Digest  # of the blob as stored
    size: int  # of the blob as stored
    diff_id: Digest  # of the uncompressed tar, as the image config claims it


# Mounts of a RUN step (`RUN --mount=...`), as the sandbox makes them.


class BindFromTar(Record):
    """Build-context files, as a tar pybuild wrote; unpacked into the step's dir (a
    read-write mount's writes vanish with the step)."""

    target: str
    tar: str
    selector: str = "/"
    readonly: bool = True


class BindFromLowers(Record):
    """A stage's or an image's filesystem (its snapshots, top first), as an overlay."""

    target: str
    lowers: tuple[str, ...]
    selector: str = "/"
    readonly: bool = True


class Tmpfs(Record):
    target: str
    size: int = 0  # bytes; 0: the kernel's default
    readonly: bool = False


class CacheDir(Record):
    """A persistent cache dir (`type=cache`); `seed_lowers`: the `from=` source whose
    `seed_selector` fills a new cache dir."""

    target: str
    dir: str
    sharing: str = "shared"  # shared | private | locked
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    readonly: bool = False
    seed_lowers: tuple[str, ...] | None = None
    seed_selector: str = "/"


class SecretFile(Record):
    """A secret: a file at `target` (none if ""), and/or the variable `env`."""

    target: str
    data: bytes
    env: str = ""
    uid: int = 0
    gid: int = 0
    mode: int = 0o400


class SSHSocket(Record):
    """An SSH agent socket at `target`, with this owner and mode. To an `Executor`,
    `socket` is the agent's socket on the host; on the wire, the sandbox's relay to it."""

    target: str
    socket: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o600


StepMount = BindFromTar | BindFromLowers | Tmpfs | CacheDir | SecretFile | SSHSocket


class CommitSpec(Record):
    """How a step's changes become a layer: a blob at `out`, and the upper dir kept as
    a snapshot in `snapshot_dir` ("": not kept). With `lowers`, whiteouts of paths that no
    lower has are left out."""

    out: str
    compression: Compression = "gzip"
    snapshot_dir: str = ""
    mtime: int | None = None  # SOURCE_DATE_EPOCH: clamp mtimes to it
    lowers: tuple[str, ...] = ()


class ExecStep(Record):
    """A RUN step: `args` run on the overlay of `lowers` (top first), in `step_dir`."""

    step_dir: str
    lowers: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    hostname: str = ""  # "": buildkitsandbox
    network: str = "none"  # none | host
    insecure: bool = False
    mounts: tuple[StepMount, ...] = ()
    commit: CommitSpec | None = None  # commit the changes if the step succeeds


# File actions (COPY, ADD, WORKDIR, heredoc files) of a FileOp.


class Owner(Record):
    """`--chown` (or WORKDIR's USER) as written; resolved in the destination's
    /etc/passwd and /etc/group as BuildKit does. `group` "": none given."""

    user: str
    group: str = ""


class MakeDir(Record):
    path: str
    mode: int = 0o755
    owner: Owner | None = None


class MakeFile(Record):
    path: str
    data: bytes
    mode: int = 0o644
    owner: Owner | None = None


class FromTar(Record):
    """Copy sources from a tar of context files pybuild wrote. `direct`: the tar holds
    one directory's contents, to extract straight onto the rootfs if the destination is
    new."""

    tar: str
    direct: bool = False


class FromLowers(Record):
    """Copy sources from a stage's or an image's snapshots (top first)."""

    lowers: tuple[str, ...]


class CopyFiles(Record):
    source: FromTar | FromLowers
    sources: tuple[str, ...]
    dest: str
    dest_is_dir: bool = False
    owner: Owner | None = None
    chmod: str = ""
    exclude: tuple[str, ...] = ()
    include_patterns: tuple[str, ...] = ()  # COPY --parents
    required_paths: tuple[str, ...] = ()
    unpack: bool = False  # ADD of a local archive


FileAction = MakeDir | MakeFile | CopyFiles


class FileStep(Record):
    """File actions applied in order on the overlay of `lowers`, in `step_dir`; commit
    the result with `Commit(step_dir=…)`."""

    step_dir: str
    lowers: tuple[str, ...]
    actions: tuple[FileAction, ...]


# --- results -----------------------------------------------------------------------------


class Pong(Record):
    uid: int
    pid: int


class Done(Record):
    """The result of a call that returns nothing."""


class Applied(Record):
    existed: bool  # the snapshot was there already


class CommitResult(Record):
    diff_id: Digest
    size: int  # of the uncompressed tar
    digest: Digest  # of the blob written
    compressed_size: int
    media_type: str
    empty: bool  # the tar has no entries: no layer (the blob is still written)
    seconds: float = 0.0  # how long the diff took (bench/executor_overhead.py)


class ExecResult(Record):
    exit_code: int
    runtime: str  # the runtime that ran the step (last tried)
    fell_back: bool = False  # the first runtime failed at run time; `runtime` is the other
    fallback_reason: str = ""
    runtime_error: str = ""  # the runtime could not run the step at all
    commit: CommitResult | None = None  # with ExecStep.commit, if the step succeeded


class FileOpResult(Record):
    warnings: tuple[str, ...] = ()  # e.g. a --chown user not in the image


class RuntimeProbe(Record):
    ok: bool
    error: str = ""
    ms: float = 0.0


class PathEntry(Record):
    """One component of a path in the merged lowers (owners as the image has them)."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...] = ()  # the ones that belong in a layer


class PathProbe(Record):
    """The merged view of a path's components, outermost first, up to the first that is
    missing or not a directory; `missing`: the walk stopped at a missing component."""

    chain: tuple[PathEntry, ...]
    missing: bool


# --- replies that are not results ----------------------------------------------------------


class Log(Record):
    """Output of a running step."""

    data: str


class SnapshotterNotice(Record):
    """The snapshotter this daemon picked, and why not a better one ("" if none)."""

    name: str
    why: str = ""


class Failure(Record):
    """A call failed. `user`: the condition is the user's to fix (bad input, a full
    disk, a corrupt blob): `message` is one line naming the operation and the path;
    else it is a bug and `trace` is the daemon's traceback (shown with --debug)."""

    user: bool
    code: str
    message: str
    trace: str = ""


# --- requests ----------------------------------------------------------------------------


class Call(Generic[R]):
    """A request whose result is an R."""

    __slots__ = ()


class Ping(Record, Call[Pong]):
    """Is the daemon there (its uid and pid)."""


class Apply(Record, Call[Applied]):
    """Unpack `layer` into the snapshot dir `dest` unless it exists: into a temporary
    name first, published as `dest` only once the blob's digest and the tar's diff_id
    are verified."""

    layer: LayerBlob
    dest: str


class Remove(Record, Call[Done]):
    """Remove trees owned by the namespace's ids (snapshots, scratch and cache dirs)."""

    paths: tuple[str, ...]


class Exec(Record, Call[ExecResult]):
    """Run a step with `runtime`, retried with `fallback` if the runtime itself fails."""

    step: ExecStep
    runtime: str
    fallback: str = ""
    id_extents: tuple[IdExtent, ...]
    state_dir: str


class FileOp(Record, Call[FileOpResult]):
    step: FileStep


class Commit(Record, Call[CommitResult]):
    step_dir: str
    spec: CommitSpec


class Cancel(Record, Call[Done]):
    """Kill the container of the running `Exec` request `target`."""

    target: int
    grace: float = 5.0


class ProbeRuntime(Record, Call[RuntimeProbe]):
    """Run a trivial container with `runtime` (does it work here, and how fast)."""

    runtime: str
    scratch: str
    state_dir: str
    id_extents: tuple[IdExtent, ...]


class ProbeSnapshotter(Record, Call[Done]):
    """Pick the snapshotter now, in the scratch dir `dir` (the notice follows)."""

    dir: str


class ProbePath(Record, Call[PathProbe]):
    lowers: tuple[str, ...]
    path: str


REPLY_TYPES: dict[type[Any], type[Any]] = {
    Ping: Pong, Apply: Applied, Remove: Done, Exec: ExecResult, FileOp: FileOpResult,
    Commit: CommitResult, Cancel: Done, ProbeRuntime: RuntimeProbe, ProbeSnapshotter: Done,
    ProbePath: PathProbe,
}


# --- envelopes and the codec ---------------------------------------------------------------


class Request(Record):
    id: int
    call: Call[Any]


class Reply(Record):
    id: int
    body: (Log | SnapshotterNotice | Failure | Pong | Done | Applied | CommitResult
           | ExecResult | FileOpResult | RuntimeProbe | PathProbe)


Message = Request | Reply


class ProtocolError(Exception):
    """A line that is not a message of this protocol (a bug, never the user's input)."""


_CLASSES: tuple[type[Any], ...] = (
    IdExtent, LayerBlob, BindFromTar, BindFromLowers, Tmpfs, CacheDir, SecretFile, SSHSocket,
    CommitSpec, ExecStep, Owner, MakeDir, MakeFile, FromTar, FromLowers, CopyFiles, FileStep,
    Pong, Done, Applied, CommitResult, ExecResult, FileOpResult, RuntimeProbe, PathEntry,
    PathProbe, Log, SnapshotterNotice, Failure, Ping, Apply, Remove, Exec, FileOp, Commit,
    Cancel, ProbeRuntime, ProbeSnapshotter, ProbePath, Request, Reply,
)
_BY_NAME: dict[str, type[Any]] = {cls.__name__: cls for cls in _CLASSES}
_FIELDS: dict[type[Any], tuple[str, ...]] = {cls: fields_of(cls) for cls in _CLASSES}
_PLAIN = (str, int, float, bool, type(None))


def _enc(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple:
        return [_enc(v) for v in value]
    if kind is Digest:
        return {"$d": str(value)}
    if kind is bytes:
        return {"$x": value.hex()}
    names = _FIELDS.get(kind)
    if names is None:
        raise ProtocolError(f"cannot encode a {kind.__name__} (not a protocol value)")
    out: dict[str, Any] = {"_": kind.__name__}
    for name in names:
        out[name] = _enc(getattr(value, name))
    return out


def _tuples(value: Any) -> Any:
    if type(value) is list:
        return tuple(_tuples(v) for v in value)
    return value


def _dec(obj: dict[str, Any]) -> Any:
    """json's object_hook: called for every object, innermost first."""
    name = obj.pop("_", None)
    if name is None:
        if "$d" in obj:
            try:
                return Digest(obj["$d"])
            except UserError as exc:
                raise ProtocolError(exc.message) from None
        if "$x" in obj:
            return bytes.fromhex(obj["$x"])
        raise ProtocolError(f"untyped object {sorted(obj)}")
    cls = _BY_NAME.get(name)
    if cls is None:
        raise ProtocolError(f"unknown message type {name!r}")
    try:
        return cls(**{k: _tuples(v) for k, v in obj.items()})
    except TypeError as exc:
        raise ProtocolError(f"bad {name}: {exc}") from None


def encode(msg: Message) -> bytes:
    """One message as a line of JSON."""
    return json.dumps(_enc(msg), separators=(",", ":")).encode() + b"\n"


def decode(line: bytes | str) -> Message:
    try:
        msg = json.loads(line, object_hook=_dec)
    except ValueError as exc:  # (json.JSONDecodeError, a bad digest or hex)
        raise ProtocolError(f"not a message: {exc}") from None
    if not isinstance(msg, Request | Reply):
        raise ProtocolError(f"not a message: {type(msg).__name__}")
    return msg

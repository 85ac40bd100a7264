"""The op DAG: frozen ops with a canonical, versioned encoding (LLB-style).

An op's identity (`op_digest`) is the sha256 of `encode(op)`; inputs are referenced by the
digests of the ops that produce them, so identical subgraphs collapse into one vertex.
Descriptions and source locations live in `Definition.metadata`, never in the digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pybuild.canonical import canonical_json
from pybuild.digest import Digest

ENCODING_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Input:
    """Output `index` of the op with digest `op`."""

    op: Digest
    index: int = 0


# --- sources ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceOp:
    """A filesystem from outside the DAG.

    identifier: `docker-image://<ref>@<digest>`, `local://<name>`, `oci-layout://…`,
    `scratch`, `http(s)://<url>` (ADD of a URL: attrs `http.filename`, `http.perm`,
    `http.checksum`) or `git://<host/path>` (ADD of a repository: attrs `git.fullurl`,
    `git.ref`, `git.subdir`, `git.keepgitdir`, `git.submodules`, `git.checksum`).
    attrs: sorted (key, value) pairs, e.g. ("platform", "linux/amd64"), ("include", "a\\nb").
    """

    identifier: str
    attrs: tuple[tuple[str, str], ...] = ()

    kind = "source"

    def inputs(self) -> tuple[Input, ...]:
        return ()

    def to_json(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "attrs": [list(a) for a in self.attrs]}


# --- exec ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheMountOpts:
    id: str
    sharing: str = "shared"  # shared | private | locked
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretOpts:
    id: str
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0
    env: str = ""  # expose as this environment variable
    file: bool = True  # also mount as a file


@dataclass(frozen=True, slots=True, kw_only=True)
class SSHOpts:
    """Options of an SSH agent socket mount (`RUN --mount=type=ssh`)."""

    id: str = "default"
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """A mount of an ExecOp. `input` is None for scratch-like mounts (tmpfs, cache, secret)."""

    target: str
    type: str = "bind"  # bind | cache | tmpfs | secret | ssh
    input: Input | None = None
    selector: str = "/"  # path inside the input
    readonly: bool = True
    cache: CacheMountOpts | None = None
    secret: SecretOpts | None = None
    tmpfs_size: int = 0
    ssh_id: str = ""
    ssh: SSHOpts | None = None  # set for type=ssh (ssh_id mirrors ssh.id)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "type": self.type,
                               "selector": self.selector, "readonly": self.readonly}
        if self.input is not None:
            out["input"] = [str(self.input.op), self.input.index]
        if self.cache is not None:
            c = self.cache
            out["cache"] = {"id": c.id, "sharing": c.sharing, "mode": c.mode,
                            "uid": c.uid, "gid": c.gid}
        if self.secret is not None:
            s = self.secret
            out["secret"] = {"id": s.id, "required": s.required, "mode": s.mode, "uid": s.uid,
                             "gid": s.gid, "env": s.env, "file": s.file}
        if self.tmpfs_size:
            out["tmpfs_size"] = self.tmpfs_size
        if self.ssh_id:
            out["ssh_id"] = self.ssh_id
        if self.ssh is not None:
            h = self.ssh
            out["ssh"] = {"id": h.id, "required": h.required, "mode": h.mode, "uid": h.uid,
                          "gid": h.gid}
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecOp:
    """Run a process on `rootfs`; output 0 is rootfs plus what the process changed."""

    rootfs: Input | None  # None: scratch
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = "0:0"
    hostname: str = ""
    network: str = "default"  # default | none | host
    security: str = "sandbox"  # sandbox | insecure
    mounts: tuple[Mount, ...] = ()
    # Env entries that reach the process but not the cache key (undeclared proxy args).
    proxy_env: tuple[str, ...] = field(default=(), compare=False)

    kind = "exec"

    def inputs(self) -> tuple[Input, ...]:
        ins = [self.rootfs] if self.rootfs is not None else []
        ins.extend(m.input for m in self.mounts if m.input is not None)
        return tuple(ins)

    def to_json(self) -> dict[str, Any]:
        return {
            "rootfs": [str(self.rootfs.op), self.rootfs.index] if self.rootfs else None,
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "user": self.user,
            "hostname": self.hostname,
            "network": self.network,
            "security": self.security,
            "mounts": [m.to_json() for m in self.mounts],
        }


# --- file ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Chown:
    """Owner as written (`--chown=app:staff`, `1000`); resolved against the target's
    /etc/passwd and /etc/group by the builder. An empty group means: same as the user."""

    user: str
    group: str = ""

    def to_json(self) -> list[str]:
        return [self.user, self.group]


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyAction:
    """Copy `sources` (paths in `source`, relative to its root) to `dest` on the base."""

    source: Input
    sources: tuple[str, ...]
    dest: str
    chown: Chown | None = None  # None: context files 0:0, stage/image files keep owners
    chmod: str = ""  # octal or symbolic, "" = keep
    allow_wildcard: bool = True
    allow_empty_wildcard: bool = True
    follow_symlinks: bool = True
    parents: bool = False
    exclude: tuple[str, ...] = ()
    from_context: bool = True  # context files become 0:0 when chown is None
    dest_is_dir: bool = False  # the dest was written with a trailing slash
    unpack: bool = False  # ADD: extract local tar archives
    # --parents: `sources` is the pivot dir; entries below it matching these patterns are
    # copied keeping their path relative to the pivot. `required_paths` must exist.
    include_patterns: tuple[str, ...] = ()
    required_paths: tuple[str, ...] = ()
    # --link: copied onto an empty layer and merged (no symlink in dest is followed).
    link: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "action": "copy",
            "source": [str(self.source.op), self.source.index],
            "sources": list(self.sources),
            "dest": self.dest,
            "chown": self.chown.to_json() if self.chown else None,
            "chmod": self.chmod,
            "allow_wildcard": self.allow_wildcard,
            "allow_empty_wildcard": self.allow_empty_wildcard,
            "follow_symlinks": self.follow_symlinks,
            "parents": self.parents,
            "exclude": list(self.exclude),
            "from_context": self.from_context,
            "dest_is_dir": self.dest_is_dir,
            "unpack": self.unpack,
            **({"include_patterns": list(self.include_patterns)}
               if self.include_patterns else {}),
            **({"required_paths": list(self.required_paths)} if self.required_paths else {}),
            **({"link": True} if self.link else {}),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MkdirAction:
    path: str
    mode: int = 0o755
    chown: Chown | None = None
    make_parents: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"action": "mkdir", "path": self.path, "mode": self.mode,
                "chown": self.chown.to_json() if self.chown else None,
                "make_parents": self.make_parents}


@dataclass(frozen=True, slots=True, kw_only=True)
class MkfileAction:
    path: str
    data: bytes
    mode: int = 0o644
    chown: Chown | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": "mkfile", "path": self.path, "data": self.data.hex(),
                "mode": self.mode,
                "chown": self.chown.to_json() if self.chown else None}


FileAction = CopyAction | MkdirAction | MkfileAction


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOp:
    """Apply file actions on `base` (None: scratch); output 0 is the result."""

    base: Input | None
    actions: tuple[FileAction, ...]

    kind = "file"

    def inputs(self) -> tuple[Input, ...]:
        ins = [self.base] if self.base is not None else []
        ins.extend(a.source for a in self.actions if isinstance(a, CopyAction))
        return tuple(ins)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": [str(self.base.op), self.base.index] if self.base else None,
            "actions": [a.to_json() for a in self.actions],
        }


# --- merge -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeOp:
    """The filesystems of `sources` stacked, bottom first (BuildKit's MergeOp): their layers
    are reused as they are, nothing is copied. `COPY --link` is a copy onto scratch merged
    onto the stage, so its layer does not depend on (and is not rebuilt for) what is below."""

    sources: tuple[Input, ...]

    kind = "merge"

    def inputs(self) -> tuple[Input, ...]:
        return self.sources

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [[str(i.op), i.index] for i in self.sources]}


Op = SourceOp | ExecOp | FileOp | MergeOp


def encode(op: Op) -> bytes:
    return canonical_json({"v": ENCODING_VERSION, "kind": op.kind, "op": op.to_json()})


def op_digest(op: Op) -> Digest:
    return Digest.from_bytes(encode(op))

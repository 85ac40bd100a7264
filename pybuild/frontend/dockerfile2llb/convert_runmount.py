"""`RUN --mount` (BuildKit's `convert_runmount.go`, `convert_secrets.go`, `convert_ssh.go`):
one parsed mount -> the exec op's Mount."""

from __future__ import annotations

import posixpath

from pybuild.frontend.dockerfile2llb.history import internal_meta
from pybuild.frontend.dockerfile2llb.state import (
    CONTEXT_SOURCE,
    DispatchContext,
    DispatchState,
    MountInfo,
    fail,
)
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.instructions.runmount import RunMount
from pybuild.gocompat import clean_path
from pybuild.llb import (
    CacheMountOpts,
    FileOp,
    Input,
    MkdirAction,
    Mount,
    SecretOpts,
    SourceOp,
    SSHOpts,
)


def context_input(ctx: DispatchContext) -> Input:
    """The main build context (one source op per build, with the .dockerignore patterns).
    Unlike BuildKit's it carries no FollowPaths: what a step reads is part of its cache key
    through the content digests, not of the source op's identity."""
    if ctx.context_input is None:
        attrs: tuple[tuple[str, str], ...] = ()
        if ctx.opts.dockerignore:
            attrs = (("exclude", "\n".join(ctx.opts.dockerignore)),)
        ctx.context_input = ctx.add(SourceOp(identifier=CONTEXT_SOURCE, attrs=attrs),
                                    internal_meta("[internal] load build context"))
    return ctx.context_input


def scratch_input(ctx: DispatchContext) -> Input:
    """An empty filesystem usable as a copy or mount source."""
    return ctx.add(FileOp(base=None, actions=(MkdirAction(path="/", mode=0o755),)))


def run_mount(ctx: DispatchContext, d: DispatchState, inst: ins.RunInstruction, m: RunMount,
              src: DispatchState | None, ssh_index: int) -> Mount:
    loc = inst.loc
    if m.type == "secret":
        return dispatch_secret(d, loc, m)
    if m.type == "ssh":
        return dispatch_ssh(d, loc, m, ssh_index)
    source_input: Input | None
    if m.type == "tmpfs":
        source_input = None
    elif m.from_:
        if src is None:
            raise fail(loc, f"unknown mount source {m.from_!r}")
        if not src.dispatched:
            raise fail(loc, f'cannot mount from stage "{m.from_}" to "{m.target}", stage needs '
                       "to be defined before current command",
                       hint="move the stage above this one")
        source_input = src.state
    elif m.type == "cache":
        source_input = None  # a cache mount without from= is seeded from scratch
    else:
        source_input = context_input(ctx)
    target = m.target
    if not posixpath.isabs(clean_path(m.target or ".")):
        target = posixpath.join("/", d.dir, m.target)
    target = clean_path(target) if target else target
    if target == "/":
        raise fail(loc, 'invalid mount target "/"',
                   hint="give the mount a target, e.g. target=/mnt")
    selector = clean_path(posixpath.join("/", m.source))
    if m.type == "tmpfs":
        return Mount(target=target, type="tmpfs", readonly=m.readonly, tmpfs_size=m.size)
    if m.type == "cache":
        cid = m.id or clean_path(m.target)
        if ctx.cache_ns:
            cid = f"{ctx.cache_ns}/{cid}"
        return Mount(target=target, type="cache", input=source_input, selector=selector,
                     readonly=m.readonly, cache=CacheMountOpts(
                         id=cid, sharing=m.sharing or "shared",
                         mode=0o755 if m.mode is None else m.mode,
                         uid=m.uid or 0, gid=m.gid or 0))
    if source_input is None:
        source_input = scratch_input(ctx)
    return Mount(target=target, type="bind", input=source_input, selector=selector,
                 readonly=m.readonly)


def dispatch_secret(d: DispatchState, loc: Loc, m: RunMount) -> Mount:
    """dispatchSecret: id defaults to the target's basename, the file to
    /run/secrets/<id> unless the secret is only an environment variable."""
    sid = m.source or m.id
    if not sid:
        if not m.target:
            raise fail(loc, "one of source, target required")
        sid = posixpath.basename(m.target)
    d.outline.secrets.setdefault(sid, MountInfo(required=m.required, loc=loc))
    target: str | None = m.target or None
    if m.env is None:
        target = m.target or "/run/secrets/" + posixpath.basename(sid)
    return Mount(target=target or "", type="secret", readonly=True, secret=SecretOpts(
        id=sid, required=m.required, mode=0o400 if m.mode is None else m.mode,
        uid=m.uid or 0, gid=m.gid or 0, env=m.env or "", file=target is not None))


def dispatch_ssh(d: DispatchState, loc: Loc, m: RunMount, index: int) -> Mount:
    """dispatchSSH: id `default`, socket /run/buildkit/ssh_agent.<n> unless a target."""
    if m.source:
        raise fail(loc, "ssh does not support source")
    sid = m.id or "default"
    d.outline.ssh.setdefault(sid, MountInfo(required=m.required, loc=loc))
    target = m.target or f"/run/buildkit/ssh_agent.{index}"
    return Mount(target=target, type="ssh", readonly=True, ssh_id=sid, ssh=SSHOpts(
        id=sid, required=m.required, mode=0o600 if m.mode is None else m.mode,
        uid=m.uid or 0, gid=m.gid or 0))

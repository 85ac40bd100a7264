"""ExecOp (RUN): the step's rootfs and mounts as the executor takes them, run, committed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Sequence

from pybuild.builder.cachekey import CacheMap
from pybuild.builder.contexts import write_context_tar
from pybuild.builder.events import VertexLog
from pybuild.builder.ops.base import OpContext
from pybuild.builder.protocols import (
    BindFromLowers,
    BindFromTar,
    CacheDir,
    ExecStep,
    SecretFile,
    SSHSocket,
    StepMount,
    Tmpfs,
)
from pybuild.builder.result import Solved
from pybuild.digest import Digest
from pybuild.errors import StepFailedError, UserError
from pybuild.llb import ExecOp, Mount, SSHOpts

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecHandler:
    commits = True  # its result is a new layer (SOURCE_DATE_EPOCH sets its times)

    def __init__(self, ctx: OpContext) -> None:
        self.ctx = ctx

    async def cache_map(self, digest: Digest, op: ExecOp, inputs: Sequence[Solved]) -> CacheMap:
        """Bind mounts of local files: their content is part of the key."""
        content = []
        for m in op.mounts:
            ctx = self.ctx.contexts.of(m.input.op) if m.input is not None else None
            if ctx is not None:
                entries = await asyncio.to_thread(ctx.select, (m.selector,), ())
                content.append((m.target, await asyncio.to_thread(ctx.digest, entries)))
        return CacheMap(content=tuple(content))

    async def execute(self, digest: Digest, op: ExecOp, name: str, inputs: Sequence[Solved],
                      cmap: CacheMap) -> Solved:
        ctx = self.ctx
        by_op = {i.op: s for i, s in zip(op.inputs(), inputs, strict=True)}
        base = by_op[op.rootfs.op] if op.rootfs is not None else Solved(layers=())
        lowers = await ctx.layers.ensure(base)
        mounts: list[StepMount] = []
        try:
            for m in op.mounts:
                spec = await self._mount(m, by_op)
                if spec is not None:
                    mounts.append(spec)
            output: list[str] = []

            def on_log(data: str) -> None:
                output.append(data)
                ctx.events(VertexLog(digest=str(digest), name=name, data=data))

            out = ctx.space.scratch_file("layer")
            step = ExecStep(step_dir=ctx.space.step_dir(digest.hex[:12]), lowers=tuple(lowers),
                            args=op.args, env=_env(op), cwd=op.cwd, user=op.user,
                            hostname=op.hostname,
                            # "default": what the executor gives steps by default.
                            network=op.network if op.network != "default"
                            else ctx.network_default,
                            insecure=op.security == "insecure", mounts=tuple(mounts),
                            commit=ctx.space.commit_spec(out, lowers))
            async with ctx.run_slots:
                # One request runs the step and, if it succeeds, diffs and commits it.
                res = await ctx.executor.run(step, on_log=on_log)
        finally:
            for spec in mounts:
                if isinstance(spec, BindFromTar):
                    with contextlib.suppress(OSError):
                        os.unlink(spec.tar)
            ctx.notices()
        if res.runtime_error:
            raise StepFailedError(
                f"the OCI runtime {res.runtime} could not run process {_argv(op.args)}: "
                f"{res.runtime_error}", output="".join(output), step_exit_code=res.exit_code)
        if res.exit_code != 0:
            raise StepFailedError(
                f"process {_argv(op.args)} did not complete successfully: exit code: "
                f"{res.exit_code}", output="".join(output), step_exit_code=res.exit_code)
        assert res.layer is not None
        solved, seconds = await ctx.layers.publish(res.layer, out, base)
        ctx.layer_seconds[name] = seconds
        return solved

    async def _mount(self, m: Mount, by_op: dict[Digest, Solved]) -> StepMount | None:
        """The executor's view of one RUN mount; None for an absent optional one."""
        ctx = self.ctx
        match m.type:
            case "bind":
                if m.input is None:
                    raise UserError("bind mount without a source")
                local = ctx.contexts.of(m.input.op)
                if local is not None:
                    # The selected context files (.dockerignore applied, as BuildKit sends
                    # them) are unpacked into the step dir by the sandbox: the user's files
                    # are never exposed, and an rw mount's writes vanish with the step.
                    entries = await asyncio.to_thread(local.select, (m.selector,), ())
                    tar = ctx.space.scratch_file("bind", ".tar")
                    await asyncio.to_thread(write_context_tar, local, entries, tar)
                    return BindFromTar(target=m.target, tar=tar, selector=m.selector,
                                       readonly=m.readonly)
                lowers = await ctx.layers.ensure(by_op[m.input.op])
                return BindFromLowers(target=m.target, lowers=tuple(lowers),
                                      selector=m.selector, readonly=m.readonly)
            case "tmpfs":
                return Tmpfs(target=m.target, size=m.tmpfs_size, readonly=m.readonly)
            case "cache":
                assert m.cache is not None
                cid = hashlib.sha256(m.cache.id.encode()).hexdigest()[:32]
                seed: tuple[str, ...] | None = None
                if m.input is not None and not ctx.contexts.is_local(m.input.op):
                    seed = tuple(await ctx.layers.ensure(by_op[m.input.op]))
                return CacheDir(target=m.target, dir=str(ctx.cache_mounts / cid),
                                sharing=m.cache.sharing, mode=m.cache.mode, uid=m.cache.uid,
                                gid=m.cache.gid, readonly=m.readonly, seed_lowers=seed,
                                seed_selector=m.selector)
            case "secret":
                assert m.secret is not None
                sec = m.secret
                data = await asyncio.to_thread(ctx.secrets.get, sec.id)
                if data is None:
                    if sec.required:
                        raise UserError(f"secret {sec.id} not found: this RUN requires it",
                                        hint=f"pass --secret id={sec.id},src=FILE or "
                                             f"--secret id={sec.id},env=VARIABLE")
                    return None
                return SecretFile(target=m.target, data=data, env=sec.env, uid=sec.uid,
                                  gid=sec.gid, mode=sec.mode)
            case "ssh":
                ssh = m.ssh if m.ssh is not None else SSHOpts(id=m.ssh_id)
                agent = ctx.ssh.socket(ssh.id)
                if agent is None:
                    if not ssh.required:
                        return None  # BuildKit skips an optional agent nobody forwarded
                    raise UserError(f"no SSH agent or key {ssh.id!r} forwarded to this build",
                                    hint=f"pass --ssh {ssh.id}=SOCKET (or --ssh default with "
                                         "SSH_AUTH_SOCK set)")
                return SSHSocket(target=m.target, socket=agent, uid=ssh.uid, gid=ssh.gid,
                                 mode=ssh.mode)
        raise UserError(f"RUN --mount=type={m.type} is not supported")


def _env(op: ExecOp) -> tuple[str, ...]:
    """The step's environment: its own, the proxy variables it did not set (they are out
    of the key), and BuildKit's default PATH when it has none."""
    own = {e.split("=", 1)[0] for e in op.env}
    env = [*op.env, *(e for e in op.proxy_env if e.split("=", 1)[0] not in own)]
    if not any(e.startswith("PATH=") for e in env):
        env.append(DEFAULT_PATH)
    return tuple(env)


def _argv(args: tuple[str, ...]) -> str:
    return json.dumps(list(args))

"""RUN (BuildKit's `dispatchRun`): the command, heredocs, mounts, network and security."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from pybuild.errors import PybuildError
from pybuild.frontend.dockerfile2llb.args import proxy_env
from pybuild.frontend.dockerfile2llb.convert_runmount import run_mount
from pybuild.frontend.dockerfile2llb.history import (
    commit,
    display,
    internal_meta,
    op_meta,
    run_command_string,
    summarize_heredoc,
)
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState, fail
from pybuild.frontend.dockerfile2llb.validations import expand_reported
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.runmount import RunMount, parse_mount
from pybuild.gocompat import runes, to_bytes
from pybuild.llb import ExecOp, FileOp, MkfileAction, Mount

DEFAULT_SHELL = ("/bin/sh", "-c")
WINDOWS_SHELL = ("cmd", "/S", "/C")


def with_shell(d: DispatchState, args: Sequence[str]) -> list[str]:
    """The stage's SHELL (or the OS default) around the joined shell-form words."""
    shell = list(d.image.config.shell) or list(
        WINDOWS_SHELL if d.image.os == "windows" else DEFAULT_SHELL)
    return [*shell, " ".join(args)]


def dispatch_run(ctx: DispatchContext, d: DispatchState, inst: ins.RunInstruction,
                 sources: list[DispatchState | None]) -> None:
    from pybuild.frontend.dockerfile.parser import chomp_heredoc_content, must_parse_heredoc

    before = d.env.copy()
    mounts: list[RunMount] = []
    for spec in inst.mounts:
        try:
            mounts.append(parse_mount(spec, lambda w: expand_reported(ctx, d, inst, w, before)))
        except PybuildError as exc:
            raise fail(inst.loc, exc.message, hint=exc.hint) from None
    if inst.devices:
        raise fail(inst.loc, "RUN --device is not supported yet",
                   hint="remove --device; pybuild has no CDI device support")
    args = list(inst.cmd_line)
    extra: list[Mount] = []
    display_suffix = ""
    prepend = inst.prepend_shell
    if inst.files:
        if len(args) != 1 or not prepend:
            raise fail(inst.loc, f"parsing produced an invalid run command: "
                       f"[{' '.join(args)}]")
        first = inst.files[0]
        if must_parse_heredoc(args[0]) is not None:
            data = chomp_heredoc_content(first.data) if first.chomp else first.data
            if d.image.os != "windows" and first.data.startswith("#!"):
                # a script with a shebang is written to a file and run directly
                src = ctx.add(FileOp(base=None, actions=(
                    MkfileAction(path="/" + first.name, data=to_bytes(data), mode=0o755),)),
                    internal_meta("[internal] preparing inline document", d.platform))
                extra.append(Mount(target="/dev/pipes", type="bind", input=src,
                                   selector="/", readonly=True))
                args = [posixpath.join("/dev/pipes/", first.name)]
            else:
                args = [data]
            # (BuildKit lexes the summary with the name: an invalid byte shows as U+FFFD)
            display_suffix = f" ({runes(summarize_heredoc(first.data))})"
        else:
            full = args[0]
            for f in inst.files:
                full += "\n" + f.data + f.name
            args = [full]
    if prepend:
        args = with_shell(d, args)

    exec_mounts: list[Mount] = []
    ssh_index = 0
    for i, m in enumerate(mounts):
        exec_mounts.append(run_mount(ctx, d, inst, m, sources[i] if i < len(sources) else None,
                                     ssh_index))
        if m.type == "ssh":
            ssh_index += 1
    env = d.env.copy()
    ssh_targets = [m.target for m in exec_mounts if m.type == "ssh"]
    if ssh_targets and env.get("SSH_AUTH_SOCK") is None:
        env.set("SSH_AUTH_SOCK", ssh_targets[0])
    network = ctx.opts.network if inst.network == "default" else inst.network
    op = ExecOp(
        rootfs=d.state,
        args=tuple(args),
        env=tuple(env.as_list()),
        cwd=d.dir,
        user=d.user,
        hostname=ctx.hostname,
        network=network or "default",
        security=inst.security,
        mounts=tuple([*extra, *exec_mounts]),
        proxy_env=proxy_env(ctx.build_args),
    )
    masked = d.env.copy()  # withSecretEnvMask: secrets as env vars show as ****
    for m in mounts:
        if m.type == "secret" and m.env:
            masked.set(m.env, "****")
    name = display(ctx, inst.loc, masked, raw_quotes=True, skip_unset_env=True)
    d.state = ctx.add(op, op_meta(ctx, d, inst.loc, name + display_suffix, env=d.env))
    commit(ctx, d, "RUN " + run_command_string(args, d.build_args, d.env), layer=True,
           buildkit=True)

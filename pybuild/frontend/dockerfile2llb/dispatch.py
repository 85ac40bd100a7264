"""Dispatch of a stage: its base state, then each instruction in order (BuildKit's
`dispatchStages` loop and `dispatch`, with the config-only instructions here)."""

from __future__ import annotations

import posixpath

from pybuild.errors import PybuildError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.args import NON_ENV_ARGS
from pybuild.frontend.dockerfile2llb.convert_copy import chown_of, dispatch_copy
from pybuild.frontend.dockerfile2llb.convert_expose import dispatch_expose
from pybuild.frontend.dockerfile2llb.convert_run import dispatch_run, with_shell
from pybuild.frontend.dockerfile2llb.history import (
    commit,
    display,
    healthcheck_string,
    op_meta,
)
from pybuild.frontend.dockerfile2llb.state import (
    ArgInfo,
    Command,
    DispatchContext,
    DispatchState,
    Phase,
    fail,
)
from pybuild.frontend.dockerfile2llb.validations import (
    expand_reported,
    lint_secret_key,
    track_once,
    validate_signal,
)
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import located
from pybuild.gocompat import clean_path, go_quote_list
from pybuild.llb import FileOp, MkdirAction
from pybuild.oci.config import DEFAULT_PATH, Healthcheck


def dispatch_stage(ctx: DispatchContext, d: DispatchState) -> None:
    if d.base is not None:
        _init_from_base(d)
    d.phase = Phase.DISPATCHED
    if d.platform is None:
        d.platform = ctx.target_platform
    img = d.image
    if "PATH" not in img.config.env_dict() and d.platform.os != "windows":
        img.set(env=(*img.config.env, f"PATH={DEFAULT_PATH}"))
    for item in img.config.env:
        k, _, v = item.partition("=")
        d.env.set(k, v)
    if img.config.working_dir:
        _workdir(ctx, d, None, img.config.working_dir)
    if img.config.user:
        d.user = img.config.user
    for cmd in d.commands:
        try:
            _dispatch(ctx, d, cmd)
        except PybuildError as exc:
            raise located(exc, cmd.inst.loc.location()) from None
        except RecursionError:
            raise fail(cmd.inst.loc, "instruction is nested too deeply to process") from None


def _init_from_base(d: DispatchState) -> None:
    """dispatchState.init: a stage built on an earlier stage starts from its state."""
    base = d.base
    assert base is not None
    d.state = base.state
    d.platform = base.platform
    d.image = base.image.clone()
    d.image.set(on_build=())  # only direct children run a stage's triggers
    d.workdir_set = base.workdir_set
    d.build_args = list(base.build_args)
    d.env = base.env.copy()
    d.dir = base.dir
    d.user = base.user


def _dispatch(ctx: DispatchContext, d: DispatchState, cmd: Command) -> None:
    d.cmd_is_onbuild = cmd.on_build
    inst = cmd.inst
    match inst:
        case ins.EnvInstruction():
            _env(ctx, d, inst)
        case ins.LabelInstruction():
            _label(ctx, d, inst)
        case ins.ArgInstruction():
            _arg(ctx, d, inst)
        case ins.RunInstruction():
            dispatch_run(ctx, d, inst, cmd.sources)
        case ins.CopyInstruction():
            dispatch_copy(ctx, d, inst, cmd.sources)
        case ins.WorkdirInstruction():
            _workdir(ctx, d, inst, expand_reported(ctx, d, inst, inst.path, d.env))
        case ins.UserInstruction():
            user = expand_reported(ctx, d, inst, inst.user, d.env)
            d.user = user
            d.image.set(user=user)
            commit(ctx, d, f"USER {user}")
        case ins.CmdInstruction():
            track_once(ctx.lint_for(inst), d, "cmd", inst)
            args = inst.cmd_line
            if inst.prepend_shell:
                _json_args_lint(ctx, d, inst)
                args = tuple(with_shell(d, args))
            d.image.set(cmd=tuple(args), args_escaped=True)
            commit(ctx, d, f"CMD {go_quote_list(args)}")
        case ins.EntrypointInstruction():
            track_once(ctx.lint_for(inst), d, "entrypoint", inst)
            ep = inst.cmd_line
            if inst.prepend_shell:
                _json_args_lint(ctx, d, inst)
                ep = tuple(with_shell(d, ep or ()))
            d.image.set(entrypoint=tuple(ep) if ep is not None else None)
            if "cmd" not in d.trackers:
                d.image.set(cmd=None)
            commit(ctx, d, f"ENTRYPOINT {go_quote_list(ep or ())}")
        case ins.HealthcheckInstruction():
            track_once(ctx.lint_for(inst), d, "healthcheck", inst)
            hc = Healthcheck(test=tuple(inst.test), interval=inst.interval,
                             timeout=inst.timeout, start_period=inst.start_period,
                             start_interval=inst.start_interval, retries=inst.retries)
            d.image.set(healthcheck=hc)
            commit(ctx, d, f"HEALTHCHECK {healthcheck_string(hc)}")
        case ins.ExposeInstruction():
            dispatch_expose(ctx, d, inst)
        case ins.VolumeInstruction():
            vols = [expand_reported(ctx, d, inst, v, d.env) for v in inst.volumes]
            if any(v == "" for v in vols):
                raise fail(inst.loc, "VOLUME specified can not be an empty string")
            d.image.set(volumes=tuple(sorted(set(d.image.config.volumes) | set(vols))))
            commit(ctx, d, f"VOLUME [{' '.join(vols)}]")
        case ins.StopSignalInstruction():
            sig = expand_reported(ctx, d, inst, inst.signal, d.env)
            validate_signal(inst.loc, sig)
            d.image.set(stop_signal=sig)
            commit(ctx, d, f"STOPSIGNAL {sig}")
        case ins.ShellInstruction():
            d.image.set(shell=tuple(inst.shell))
            commit(ctx, d, f"SHELL [{' '.join(inst.shell)}]")
        case ins.MaintainerInstruction():  # MaintainerDeprecated is a parse-time check
            d.image.author = inst.maintainer
            commit(ctx, d, f"MAINTAINER {inst.maintainer}")
        case ins.OnbuildInstruction():
            d.image.set(on_build=(*d.image.config.on_build, inst.expression))
        case _:
            raise fail(inst.loc, f"{inst.keyword} is not supported here")


def _json_args_lint(ctx: DispatchContext, d: DispatchState, inst: ins.Instruction) -> None:
    if not d.image.config.shell:
        ctx.lint_for(inst).run(rules.JSON_ARGS_RECOMMENDED, inst.loc, inst.keyword)


def _env(ctx: DispatchContext, d: DispatchState, inst: ins.EnvInstruction) -> None:
    before = d.env.copy()  # all words of one instruction see the same environment
    pairs = [(expand_reported(ctx, d, inst, kv.key, before),
              expand_reported(ctx, d, inst, kv.value, before), kv.no_delim)
             for kv in inst.pairs]
    lint = ctx.lint_for(inst)
    parts = []
    config_env = list(d.image.config.env)
    for key, value, no_delim in pairs:
        if no_delim:
            lint.run(rules.LEGACY_KEY_VALUE_FORMAT, inst.loc, "ENV")
        lint_secret_key(lint, "ENV", key, inst.loc)
        if not key:
            raise fail(inst.loc, "ENV names can not be blank")
        d.env.set(key, value)
        config_env = _add_env(config_env, key, value)
        parts.append(f"{key}={value}")
    d.image.set(env=tuple(config_env))
    commit(ctx, d, "ENV " + " ".join(parts))


def _add_env(env: list[str], key: str, value: str) -> list[str]:
    out = list(env)
    for i, item in enumerate(out):
        if item.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def _label(ctx: DispatchContext, d: DispatchState, inst: ins.LabelInstruction) -> None:
    before = d.env.copy()
    labels = dict(d.image.config.labels)
    parts = []
    for kv in inst.pairs:
        key = expand_reported(ctx, d, inst, kv.key, before)
        value = expand_reported(ctx, d, inst, kv.value, before)
        if kv.no_delim:
            ctx.lint_for(inst).run(rules.LEGACY_KEY_VALUE_FORMAT, inst.loc, "LABEL")
        if not key:
            raise fail(inst.loc, "LABEL names can not be blank")
        labels[key] = value
        parts.append(f"{key}={value}")
    d.image.set(labels=tuple(sorted(labels.items())))
    commit(ctx, d, "LABEL " + " ".join(parts))


def _arg(ctx: DispatchContext, d: DispatchState, inst: ins.ArgInstruction) -> None:
    """dispatchArg: build arg > in-stage default > global value (only without default)."""
    parts = []
    lint = ctx.lint_for(inst)
    for decl in inst.args:
        lint_secret_key(lint, "ARG", decl.key, inst.loc)
        has_value = decl.key in ctx.build_args
        value = decl.value
        inherited = False  # the global value of a re-declared meta ARG
        if value is None and not has_value:
            value = ctx.global_args.get(decl.key)
            inherited = value is not None
        elif has_value:
            value = ctx.build_args[decl.key]
        elif value is not None:
            value = expand_reported(ctx, d, inst, value, d.env)
        if value is not None and decl.key not in NON_ENV_ARGS:
            d.env.set(decl.key, value)
        if not inherited:
            d.outline.all_args[decl.key] = ArgInfo(key=decl.key, value=value or "",
                                                   comment=decl.comment, loc=inst.loc)
        d.outline.used_args.add(decl.key)
        ctx.consumed_args.add(decl.key)
        d.build_args.append((decl.key, value))
        parts.append(decl.key if value is None else f"{decl.key}={value}")
    commit(ctx, d, "ARG " + " ".join(parts))


def _workdir(ctx: DispatchContext, d: DispatchState, inst: ins.WorkdirInstruction | None,
             path: str) -> None:
    """dispatchWorkdir; `inst` None: the base image's WorkingDir (applied, not created)."""
    if inst is not None:
        if not d.workdir_set and not path.startswith("/"):
            ctx.lint_for(inst).run(rules.WORKDIR_RELATIVE_PATH, inst.loc, path)
        d.workdir_set = True
    if not path:
        raise fail(inst.loc if inst is not None else d.loc,
                   "normalizing workdir: cannot normalize nothing")
    current = d.image.config.working_dir
    wd = path if path.startswith("/") else posixpath.join("/", current, path)
    wd = clean_path(wd)
    d.image.set(working_dir=wd)
    d.dir = wd
    if inst is None:
        return
    layer = wd != "/"
    if layer:
        chown = chown_of(d.image.config.user) if d.image.config.user else None
        d.state = ctx.add(
            FileOp(base=d.state, actions=(MkdirAction(path=wd, mode=0o755, chown=chown,
                                                      make_parents=True),)),
            op_meta(ctx, d, inst.loc, display(ctx, inst.loc, d.env), env=d.env),
        )
    commit(ctx, d, f"WORKDIR {wd}", layer=layer)

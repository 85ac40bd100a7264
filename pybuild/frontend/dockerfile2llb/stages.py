"""The stage graph: stages from FROM lines, the target, `--from` / `from=` sources,
reachability (BuildKit's `buildDispatchStates`, `resolveTarget`, `toCommand`)."""

from __future__ import annotations

import re

from pybuild.errors import PybuildError, UserError
from pybuild.frontend.dockerfile2llb.args import expand_with_matches
from pybuild.frontend.dockerfile2llb.base import apply_named_stage
from pybuild.frontend.dockerfile2llb.state import (
    EMPTY_IMAGE,
    Command,
    DispatchContext,
    DispatchState,
    fail,
)
from pybuild.frontend.dockerfile2llb.validations import report_from_args, report_platform_flag
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.instructions.runmount import parse_mount
from pybuild.frontend.suggest import with_suggestion
from pybuild.oci.platform import Platform

_COUNTED = (ins.CopyInstruction, ins.RunInstruction, ins.WorkdirInstruction)


def add_stage(ctx: DispatchContext, i: int, from_: ins.FromInstruction,
              commands: list[ins.Instruction]) -> None:
    """One FROM (buildDispatchStates): its base name and platform expanded with the global
    scope only, and the FROM checks on the names they use."""
    loc = from_.loc
    lint = ctx.lint_for(from_)
    known = set(ctx.global_args.items) | set(ctx.outline.all_args)
    base_name, used, unmatched = expand_with_matches(ctx, loc, from_.image, ctx.global_args)
    report_from_args(lint, known, unmatched, loc)
    if not base_name:
        raise fail(loc, f"base name ({from_.image}) should not be blank",
                   hint="check the ARG used in FROM: it expands to nothing")
    d = DispatchState(base_name=base_name, loc=loc, from_=from_, name=from_.stage_name,
                      stage_name=from_.stage_name, raw=list(commands),
                      outline=ctx.outline.clone())
    if from_.platform:
        text, matched, unmatched = expand_with_matches(ctx, loc, from_.platform,
                                                       ctx.global_args)
        report_from_args(lint, known, unmatched, loc)
        report_platform_flag(lint, from_.stage_name, from_.platform, text, matched, unmatched,
                             ctx.global_args, loc)
        if not text:
            msg = with_suggestion(f"empty platform value from expression {from_.platform}",
                                  from_.platform.strip("${}"), list(ctx.global_args.items))
            raise fail(loc, msg)
        try:
            d.platform = Platform.parse(text)
        except UserError as exc:
            raise fail(loc, f"failed to parse platform {from_.platform}: {exc.message}"
                       ) from None
        used |= matched
    if d.name and d.name in ctx.named and d.name not in ("scratch", "context"):
        apply_named_stage(ctx, d, ctx.named[d.name])
        ctx.add_state(d)
        return
    if not d.name:
        d.stage_name = f"stage-{i}"
    ctx.add_state(d)
    d.outline.used_args |= used
    total = 1 if d.base_name != EMPTY_IMAGE and d.base is None else 0
    total += sum(1 for c in commands if isinstance(c, _COUNTED))
    d.cmd_total = total
    d.ignore_cache = ctx.opts.no_cache or (
        bool(ctx.opts.no_cache_filter) and d.name in ctx.opts.no_cache_filter)


def find_target(ctx: DispatchContext) -> DispatchState:
    if not ctx.opts.target:
        return ctx.states[-1]
    found = ctx.by_name.get(ctx.opts.target.lower())
    if found is None:
        names = [s.name for s in ctx.states if s.name]
        raise UserError(with_suggestion(
            f'target stage "{ctx.opts.target}" could not be found', ctx.opts.target, names),
            code="bad-target", hint="stages: " + (", ".join(names) or "(no named stages)"))
    return found


def to_command(ctx: DispatchContext, d: DispatchState, inst: ins.Instruction,
               on_build: bool = False) -> Command:
    """The instruction with the stages it reads from; they become dependencies of `d`."""
    cmd = Command(inst=inst, on_build=on_build)
    if isinstance(inst, ins.CopyInstruction) and inst.from_:
        ref = inst.from_
        if "$" in ref:
            try:
                expanded = str(ctx.lex.process_word(ref, {}))
            except PybuildError:
                expanded = ""
            if expanded != ref:
                raise fail(inst.loc, "variable expansion is not supported for --from, define a "
                           "new stage with FROM using ARG from global scope as a workaround")
        if re.fullmatch(r"[+-]?\d+", ref):
            idx = int(ref)
            if idx < 0 or idx >= len(ctx.states):
                raise fail(inst.loc, f"invalid stage index {idx}",
                           hint=f"there are {len(ctx.states)} stages, numbered from 0")
            src = ctx.states[idx]
        else:
            src = ctx.by_name.get(ref.lower()) or implicit_stage(ctx, ref, inst.loc)
        cmd.sources = [src]
    elif isinstance(inst, ins.RunInstruction):
        for spec in inst.mounts:
            m = parse_mount(spec, None)
            if not m.from_:
                cmd.sources.append(None)
                continue
            cmd.sources.append(ctx.by_name.get(m.from_.lower())
                               or implicit_stage(ctx, m.from_, inst.loc))
    for dep in cmd.sources:
        if dep is not None:
            d.add_dep(dep, inst)
    return cmd


def implicit_stage(ctx: DispatchContext, ref: str, loc: Loc) -> DispatchState:
    """`COPY --from=<image>`: an unnamed stage made of that image only."""
    st = DispatchState(base_name=ref, loc=loc, kind="implicit")
    ctx.add_state(st)
    return st


def reachable(target: DispatchState, states: list[DispatchState]) -> list[DispatchState]:
    """The stages `target` needs (base and sources, transitively), in file order."""
    seen: set[int] = set()
    stack = [target]
    while stack:
        s = stack.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        if s.base is not None:
            stack.append(s.base)
        stack.extend(dep for dep, _ in s.deps)
    return [s for s in states if id(s) in seen]

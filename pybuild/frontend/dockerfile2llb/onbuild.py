"""ONBUILD triggers of a stage's base become the stage's first commands
(BuildKit's `initOnBuildTriggers`)."""

from __future__ import annotations

from pybuild.errors import UserError
from pybuild.frontend.dockerfile2llb.stages import to_command
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState, Phase, fail
from pybuild.frontend.dockerfile2llb.validations import check_cycles
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.parse import parse_instruction
from pybuild.gocompat import to_bytes


def init_onbuild(ctx: DispatchContext, stages: list[DispatchState]) -> bool:
    """Turn the triggers of each stage's base into commands; True if a trigger added a
    dependency (then the stages to resolve must be computed again)."""
    from pybuild.frontend.dockerfile.parser import parse

    new_deps = False
    for d in stages:
        if d.phase >= Phase.TRIGGERS_READY or d.kind == "implicit":
            continue
        d.phase = Phase.TRIGGERS_READY
        if d.base is None:
            triggers = list(d.image.config.on_build)
        elif d.base.kind == "named":
            triggers = list(d.base.image.config.on_build)
        else:
            triggers = [c.inst.expression for c in d.base.commands
                        if isinstance(c.inst, ins.OnbuildInstruction)]
        d.image.set(on_build=())
        if not triggers:
            continue
        cmds = []
        for trigger in triggers:
            try:
                parsed = parse(to_bytes(trigger), ctx.opts.filename)
            except UserError as exc:
                raise fail(d.loc, f"invalid ONBUILD trigger {trigger!r}: {exc.message}"
                           ) from None
            if len(parsed.ast.children) != 1:
                raise fail(d.loc, "onbuild trigger should be a single expression")
            node = parsed.ast.children[0]
            # the trigger is reported at the FROM line of the stage it runs in
            node.start_line, node.end_line = d.loc.start_line, d.loc.end_line
            inst = parse_instruction(node, ctx.opts.filename)
            if isinstance(inst, ins.FromInstruction):
                raise fail(d.loc, "FROM isn't allowed as an ONBUILD trigger")
            cmd = to_command(ctx, d, inst, on_build=True)
            if any(s is not None for s in cmd.sources):
                new_deps = True
            cmds.append(cmd)
        d.commands = cmds + d.commands
        d.cmd_total += len(cmds)
    if new_deps:
        check_cycles(ctx.states)
    return new_deps



"""Dockerfile -> op DAG + image config: the phases, in BuildKit's `toDispatchState` order.

1. parse, split into meta ARGs and stages, lint the stage names (`stages`, `validations`);
2. the global scope: automatic platform args, TARGETSTAGE, meta ARGs (`args`);
3. each FROM expanded with the global scope only, linked to an earlier stage of that name,
   named contexts applied (`stages`, `base`);
4. `COPY --from` / `RUN --mount from=` references resolved to stages, cycles rejected;
5. base images of the stages the target needs resolved, then ONBUILD triggers turned into
   commands (`base`, `onbuild`); triggers may add dependencies, so 4-5 repeat until stable;
6. the needed stages dispatched in file order (`dispatch`), then the result assembled.

This is the only module that knows this order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from pybuild.errors import DockerfileSyntaxError, PybuildError, SourceLocation, UserError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.args import build_meta_args, default_args, parse_epoch
from pybuild.frontend.dockerfile2llb.base import resolve_bases
from pybuild.frontend.dockerfile2llb.dispatch import dispatch_stage
from pybuild.frontend.dockerfile2llb.lint import Linter, parse_check
from pybuild.frontend.dockerfile2llb.onbuild import init_onbuild
from pybuild.frontend.dockerfile2llb.options import FrontendOptions, FrontendResult
from pybuild.frontend.dockerfile2llb.stages import add_stage, find_target, reachable, to_command
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState
from pybuild.frontend.dockerfile2llb.validations import check_cycles, lint_stages
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.parse import parse_instruction
from pybuild.frontend.resolver import ImageMetaResolver
from pybuild.frontend.results import BuildWarning, SourceRange
from pybuild.frontend.shell.lex import ShellLex
from pybuild.oci.config import ImageConfig
from pybuild.oci.platform import host as host_platform

if TYPE_CHECKING:
    from pybuild.frontend.dockerfile.parser import Node

Stages = list[tuple[ins.FromInstruction, list[ins.Instruction]]]


def compile_dockerfile(opts: FrontendOptions, resolver: ImageMetaResolver) -> FrontendResult:
    """Compile a Dockerfile. Raises UserError (with a location) for any bad input."""
    try:
        ctx, target = _dispatch_all(opts, resolver)
        return _result(ctx, target)
    except PybuildError:
        raise
    except RecursionError:
        raise UserError("the Dockerfile is nested too deeply to process",
                        location=SourceLocation(opts.filename, 1, 1)) from None


def _dispatch_all(opts: FrontendOptions, resolver: ImageMetaResolver
                  ) -> tuple[DispatchContext, DispatchState]:
    from pybuild.frontend.dockerfile.parser import parse

    if not opts.dockerfile:
        raise UserError("the Dockerfile cannot be empty",
                        location=SourceLocation(opts.filename, 1, 1),
                        hint="add at least a FROM instruction")
    parsed = parse(opts.dockerfile, opts.filename)
    build_args = dict(opts.build_args)
    check = build_args.get("BUILDKIT_DOCKERFILE_CHECK")
    build_platform = opts.build_platform or host_platform()
    ctx = DispatchContext(
        opts=opts, resolver=resolver, lex=ShellLex(parsed.escape_token),
        lint=Linter(config=parse_check(check if check is not None
                                       else parsed.directives.check),
                    filename=opts.filename),
        build_platform=build_platform, target_platform=opts.platform or build_platform,
        implicit_target=opts.platform is None, epoch=parse_epoch(build_args),
        build_args=build_args, named=dict(opts.named_contexts),
        multi_platform=opts.multi_platform or build_args.get(
            "BUILDKIT_MULTI_PLATFORM", "").lower() in ("1", "true", "t"))
    syntax = parsed.directives.syntax
    if syntax and build_args.get("BUILDKIT_SYNTAX") != "dockerfile.v0":
        line = parsed.directives.lines.get("syntax", 1)
        ctx.warnings.append(BuildWarning(
            rule="", filename=opts.filename,
            message=f"ignoring the syntax directive {syntax!r}: pybuild always uses its "
                    "built-in Dockerfile frontend",
            ranges=(SourceRange(start_line=line, end_line=line),)))
    for w in parsed.warnings:
        if "continuation" in w.message.lower():
            ctx.lint.run(rules.NO_EMPTY_CONTINUATION, w.line)

    meta_args, stages = _split(parsed.ast.children, opts.filename)
    lint_stages(ctx.lint, stages)

    ctx.global_args = default_args(ctx, opts.target or stages[-1][0].stage_name or "default")
    build_meta_args(ctx, meta_args)
    for i, (from_, commands) in enumerate(stages):
        add_stage(ctx, i, from_, commands)

    target = find_target(ctx)
    for d in list(ctx.states):
        if d.kind != "implicit":
            d.commands = [to_command(ctx, d, c) for c in d.raw]
    check_cycles(ctx.states)
    if len(ctx.states) == 1:
        ctx.states[0].stage_name = ""

    while True:
        needed = reachable(target, ctx.states)
        resolve_bases(ctx, needed)
        if not init_onbuild(ctx, needed):
            break

    needed = reachable(target, ctx.states)
    for d in list(ctx.states):
        if d in needed and not d.dispatched:
            dispatch_stage(ctx, d)
    ctx.lint.check()
    return ctx, target


def _split(nodes: Sequence[Node], filename: str) -> tuple[list[ins.ArgInstruction], Stages]:
    """instructions.Parse: ARGs before the first FROM are meta args."""
    meta_args: list[ins.ArgInstruction] = []
    stages: Stages = []
    for node in nodes:
        inst = parse_instruction(node, filename)
        if not stages and isinstance(inst, ins.ArgInstruction):
            meta_args.append(inst)
        elif isinstance(inst, ins.FromInstruction):
            stages.append((inst, []))
        elif not stages:
            raise inst.loc.error("no build stage in current context",
                                 hint="only ARG may come before the first FROM")
        else:
            stages[-1][1].append(inst)
    if not stages:
        raise DockerfileSyntaxError("dockerfile contains no stages to build",
                                    location=SourceLocation(filename, 1, 1),
                                    hint="add a FROM instruction, e.g. FROM busybox")
    return meta_args, stages


def _result(ctx: DispatchContext, target: DispatchState) -> FrontendResult:
    img = target.image
    labels = dict(img.config.labels)
    labels.update(ctx.opts.labels)
    os_, arch, variant, os_version = img.os, img.architecture, img.variant, img.os_version
    if not ctx.implicit_target:
        t = ctx.target_platform
        os_, arch, variant, os_version = t.os, t.architecture, t.variant, t.os_version
    config = ImageConfig(
        architecture=arch or ctx.target_platform.architecture,
        os=os_ or "linux",
        variant=variant,
        os_version=os_version,
        author=img.author,
        created=img.created,
        config=replace(img.config, labels=tuple(sorted(labels.items()))),
        history=tuple(img.history),
    )
    return FrontendResult(
        definition=ctx.dag.build(target.state),
        config=config,
        stage_name=target.stage_name or target.name,
        warnings=tuple(ctx.warnings + ctx.lint.found),
    )

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

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from pybuild.errors import DockerfileSyntaxError, PybuildError, SourceLocation, UserError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.args import (
    PROXY_ARGS,
    build_meta_args,
    default_args,
    parse_epoch,
)
from pybuild.frontend.dockerfile2llb.base import resolve_bases
from pybuild.frontend.dockerfile2llb.dispatch import dispatch_stage
from pybuild.frontend.dockerfile2llb.lint import Linter, parse_check
from pybuild.frontend.dockerfile2llb.onbuild import init_onbuild
from pybuild.frontend.dockerfile2llb.options import FrontendOptions, FrontendResult
from pybuild.frontend.dockerfile2llb.outline import build_outline
from pybuild.frontend.dockerfile2llb.stages import add_stage, find_target, reachable, to_command
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState
from pybuild.frontend.dockerfile2llb.validations import check_cycles, lint_parsed, lint_stages
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.parse import parse_instruction
from pybuild.frontend.resolver import ImageMetaResolver
from pybuild.frontend.results import BuildWarning, SourceRange
from pybuild.frontend.shell.lex import ShellLex
from pybuild.frontend.subrequests import LintError, LintReport, Outline, Target, TargetList
from pybuild.gocompat import has_invalid_utf8, runes
from pybuild.oci.config import ImageConfig
from pybuild.oci.platform import host as host_platform

if TYPE_CHECKING:
    from pybuild.frontend.dockerfile.parser import Node

Stages = list[tuple[ins.FromInstruction, list[ins.Instruction]]]


def compile_dockerfile(opts: FrontendOptions, resolver: ImageMetaResolver) -> FrontendResult:
    """Compile a Dockerfile. Raises UserError (with a location) for any bad input."""
    ctx, target = _guarded(opts, lambda: _dispatch_all(opts, resolver))
    return _result(ctx, target)


def outline(opts: FrontendOptions, resolver: ImageMetaResolver) -> Outline:
    """`--call=outline`: the build args, secrets and SSH ids the target uses
    (`Dockerfile2Outline`: the build is converted, nothing runs)."""
    _, target = _guarded(opts, lambda: _dispatch_all(opts, resolver))
    return build_outline(target, opts.dockerfile)


def lint(opts: FrontendOptions, resolver: ImageMetaResolver) -> LintReport:
    """`--call=check` (`DockerfileLint`): every build check, over all stages unless a
    target is given; a bad Dockerfile is reported in the result, after the warnings
    found before the error, instead of raised."""
    found: list[BuildWarning] = []
    try:
        ctx, _ = _guarded(opts, lambda: _dispatch_all(opts, resolver, all_stages=not opts.target,
                                                      collect=found))
    except UserError as exc:
        loc = exc.location
        where = SourceRange(start_line=loc.start_line, end_line=loc.end_line) if loc else None
        return LintReport(filename=opts.filename, source=opts.dockerfile,
                          warnings=tuple(found), error=LintError(message=str(exc.message),
                                                                 location=where))
    # only the rules: BuildKit's check never sees `# syntax=` (it would run that frontend)
    return LintReport(filename=opts.filename, source=opts.dockerfile,
                      warnings=tuple(ctx.lint.found))


T = TypeVar("T")


def _guarded(opts: FrontendOptions, run: Callable[[], T]) -> T:
    try:
        return run()
    except PybuildError:
        raise
    except RecursionError:
        raise UserError("the Dockerfile is nested too deeply to process",
                        location=SourceLocation(opts.filename, 1, 1)) from None


def _linter(opts: FrontendOptions, check_directive: str | None,
            found: list[BuildWarning]) -> Linter:
    """The build's linter: BUILDKIT_DOCKERFILE_CHECK replaces the `# check=` directive."""
    arg = dict(opts.build_args).get("BUILDKIT_DOCKERFILE_CHECK")
    spec, what = (arg, "build-arg:BUILDKIT_DOCKERFILE_CHECK") if arg is not None else (
        check_directive or "", "check options")
    try:
        config = parse_check(spec)
    except ValueError as exc:
        raise UserError(f"failed to parse {what}: {exc}",
                        hint="e.g. # check=skip=JSONArgsRecommended;error=true") from None
    return Linter(config=config, filename=opts.filename, found=found)


def _dispatch_all(opts: FrontendOptions, resolver: ImageMetaResolver, *,
                  all_stages: bool = False, collect: list[BuildWarning] | None = None
                  ) -> tuple[DispatchContext, DispatchState]:
    from pybuild.frontend.dockerfile.parser import parse

    if not opts.dockerfile:
        raise UserError("the Dockerfile cannot be empty",
                        location=SourceLocation(opts.filename, 1, 1),
                        hint="add at least a FROM instruction")
    parsed = parse(opts.dockerfile, opts.filename)
    build_args = dict(opts.build_args)
    build_platform = opts.build_platform or host_platform()
    found: list[BuildWarning] = collect if collect is not None else []
    ctx = DispatchContext(
        opts=opts, resolver=resolver, lex=ShellLex(parsed.escape_token),
        lint=_linter(opts, parsed.directives.check, found),
        build_platform=build_platform, target_platform=opts.platform or build_platform,
        implicit_target=opts.platform is None, epoch=parse_epoch(build_args),
        build_args=build_args, named=dict(opts.named_contexts), all_stages=all_stages,
        multi_platform=opts.multi_platform or build_args.get(
            "BUILDKIT_MULTI_PLATFORM", "").lower() in ("1", "true", "t"))
    syntax = syntax_warning(opts, parsed.directives.syntax,
                            parsed.directives.lines.get("syntax", 1))
    if syntax is not None:
        ctx.warnings.append(syntax)
    for w in parsed.warnings:
        if "continuation" in w.message.lower():
            ctx.lint.run(rules.NO_EMPTY_CONTINUATION, w.line)
    if opts.dockerignore:
        from pybuild.context.patterns import PatternMatcher

        ctx.ignore = PatternMatcher(opts.dockerignore)

    meta_args, stages = _split(ctx.lint, parsed.ast.children, opts.filename)
    lint_stages(ctx.lint, stages)

    ctx.global_args = default_args(ctx, opts.target or stages[-1][0].stage_name or "default")
    _lint_default_bases(ctx, meta_args, stages)
    ctx.outline.all_args = build_meta_args(ctx, ctx.global_args, meta_args, ctx.build_args)
    ctx.consumed_args |= set(ctx.outline.all_args)
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
        needed = list(ctx.states) if all_stages else reachable(target, ctx.states)
        resolve_bases(ctx, needed)
        if not init_onbuild(ctx, needed):
            break

    needed = list(ctx.states) if all_stages else reachable(target, ctx.states)
    for d in list(ctx.states):
        if d in needed and not d.dispatched:
            dispatch_stage(ctx, d)
    ctx.lint.check()
    return ctx, target


def syntax_warning(opts: FrontendOptions, syntax: str | None, line: int) -> BuildWarning | None:
    """`# syntax=` (or the BUILDKIT_SYNTAX build arg) names a frontend image; BuildKit would
    run it. pybuild cannot, so it says that it uses its own frontend instead."""
    arg = dict(opts.build_args).get("BUILDKIT_SYNTAX")
    if arg == "dockerfile.v0":  # BuildKit's name of the built-in frontend
        return None
    if arg is not None:
        return BuildWarning(
            rule="", filename=opts.filename,
            message=f"ignoring BUILDKIT_SYNTAX={arg}: pybuild always uses its built-in "
                    "Dockerfile frontend")
    if not syntax:
        return None
    return BuildWarning(
        rule="", filename=opts.filename,
        message=f"ignoring the syntax directive {syntax!r}: pybuild always uses its built-in "
                "Dockerfile frontend",
        ranges=(SourceRange(start_line=line, end_line=line),))


def _split(lint: Linter, nodes: Sequence[Node], filename: str
           ) -> tuple[list[ins.ArgInstruction], Stages]:
    """instructions.Parse: ARGs before the first FROM are meta args; the parse-time
    checks run as each instruction is parsed (so they are kept if a later one fails)."""
    meta_args: list[ins.ArgInstruction] = []
    stages: Stages = []
    for node in nodes:
        inst = parse_instruction(node, filename)
        lint_parsed(lint, inst)
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


def _lint_default_bases(ctx: DispatchContext, meta_args: list[ins.ArgInstruction],
                        stages: Stages) -> None:
    """validateBaseImagesWithDefaultArgs: InvalidDefaultArgInFrom for a FROM that gives
    no valid image name when no build arg is passed."""
    from pybuild.oci.reference import Reference

    env = ctx.global_args.copy()
    try:
        build_meta_args(ctx, env, meta_args, {})
        for from_, _ in stages:
            name = ctx.lex.process_word(from_.image, env.items)
            try:
                Reference.parse(name)
            except UserError:
                ctx.lint.run(rules.INVALID_DEFAULT_ARG_IN_FROM, from_.loc, from_.image)
    except PybuildError:
        return  # the build fails later with this error; the check gives up


def list_targets(dockerfile: bytes, filename: str = "Dockerfile") -> TargetList:
    """`--call=targets` (`ListTargets`): the stages, from parsing alone."""
    from pybuild.frontend.dockerfile.parser import parse

    parsed = parse(dockerfile, filename)
    froms = [i for i in (parse_instruction(n, filename) for n in parsed.ast.children)
             if isinstance(i, ins.FromInstruction)]
    return TargetList(sources=(dockerfile,), targets=tuple(
        Target(name=f.stage_name, description=f.comment, default=i == len(froms) - 1,
               base=f.image, platform=f.platform,
               location=SourceRange(start_line=f.loc.start_line, end_line=f.loc.end_line))
        for i, f in enumerate(froms)))


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
    text = json.dumps(config.to_json(), ensure_ascii=False)
    if has_invalid_utf8(text):
        # Go's encoding/json writes each invalid byte of a string as U+FFFD; so does the
        # image config BuildKit exports for e.g. a Latin-1 LABEL value.
        config = ImageConfig.parse(runes(text).encode(), where="image config")
    return FrontendResult(
        definition=ctx.dag.build(target.state),
        config=config,
        stage_name=target.stage_name or target.name,
        warnings=tuple(ctx.warnings + ctx.lint.found),
        unused_build_args=_unused_build_args(ctx),
    )


# Build args every build may pass without an ARG (BuildKit's and buildx's own).
_BUILTIN_ARGS = frozenset({
    "SOURCE_DATE_EPOCH", "BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH",
    "BUILDVARIANT", "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH",
    "TARGETVARIANT", "TARGETSTAGE",
})


def _unused_build_args(ctx: DispatchContext) -> tuple[str, ...]:
    """Build args no ARG of the built stages (or the global scope) declared, as Docker's
    `[Warning] One or more build-args [...] were not consumed` names them; the proxy
    args, BUILDKIT_* controls and the automatic platform args never count."""
    return tuple(sorted(
        k for k in ctx.build_args
        if k not in ctx.consumed_args and k not in _BUILTIN_ARGS
        and k.lower() not in PROXY_ARGS and not k.startswith("BUILDKIT_")))

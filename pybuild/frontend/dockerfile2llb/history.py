"""Progress names (`prefixCommand`), op metadata, image history and Go-style formatting."""

from __future__ import annotations

from pybuild.errors import PybuildError
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState, EnvList
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.shell.lex import ShellLex
from pybuild.gocompat import go_duration
from pybuild.llb import OpMetadata
from pybuild.oci.config import Healthcheck, History
from pybuild.oci.platform import Platform

HISTORY_COMMENT = "buildkit.dockerfile.v0"


def format_platform(p: Platform) -> str:
    s = f"{p.os}/{p.architecture}"
    return f"{s}/{p.variant}" if p.variant else s


def format_platform_all(p: Platform) -> str:
    """containerd's platforms.FormatAll: the OS version (and features) in parentheses."""
    os_part = p.os
    if p.os_version or p.os_features:
        inner = p.os_version
        if p.os_features:
            inner += "+" + "+".join(p.os_features)
        os_part += f"({inner})"
    s = f"{os_part}/{p.architecture}"
    return f"{s}/{p.variant}" if p.variant else s


def platform_from_env(env: EnvList) -> Platform | None:
    """platformFromEnv: the target platform a stage's TARGET* args name, if any."""
    os_ = arch = variant = ""
    found = False
    for key, value in env.items.items():
        if key == "TARGETPLATFORM":
            try:
                return Platform.parse(value)
            except PybuildError:
                continue
        if key in ("TARGETOS", "TARGETARCH", "TARGETVARIANT"):
            found = True
            if key == "TARGETOS":
                os_ = value
            elif key == "TARGETARCH":
                arch = value
            else:
                variant = value
    if not found:
        return None
    return Platform(os=os_, architecture=arch, variant=variant)


def cross_suffix(base: Platform, target: Platform | None) -> str:
    """formatTargetPlatform: `->arm64` when a stage for one platform builds for another."""
    if target is None:
        return ""
    p = Platform.normalize(os=target.os or base.os,
                           architecture=target.architecture or base.architecture,
                           variant=target.variant, os_version=target.os_version)
    if p.os == base.os and p.architecture != base.architecture:
        return "->" + p.architecture + (f"/{p.variant}" if p.variant else "")
    if p.os != base.os:
        return "->" + format_platform_all(p)
    return ""


def step_label(ctx: DispatchContext, d: DispatchState, platform: Platform | None = None,
               env: EnvList | None = None) -> str:
    """The next `[platform stage n/total]` label of `d` (BuildKit's `prefixCommand`
    counts every call), or "" for a stage whose steps are not numbered. The platform is
    shown in a multi-platform build, with `->arch` when the stage declares other TARGET*
    args (a cross-compiling `FROM --platform=$BUILDPLATFORM` stage)."""
    if d.cmd_total == 0:
        return ""
    out = "["
    p = platform or d.platform
    if ctx.multi_platform and p is not None:
        out += format_platform_all(p)
        if env is not None:
            out += cross_suffix(p, platform_from_env(env))
        out += " "
    if d.stage_name:
        out += d.stage_name + " "
    d.cmd_index += 1
    width = len(str(d.cmd_total))
    return out + f"{d.cmd_index:>{width}}/{d.cmd_total}]"


def op_meta(ctx: DispatchContext, d: DispatchState, loc: Loc, text: str,
            platform: Platform | None = None, instruction: str = "",
            env: EnvList | None = None) -> OpMetadata:
    """The metadata of the next numbered step of `d`."""
    label = step_label(ctx, d, platform, env)
    if label and d.cmd_is_onbuild:
        text = "ONBUILD " + text
    p = platform or d.platform
    return OpMetadata(description=f"{label} {text}" if label else text,
                      stage=d.stage_name or d.name, filename=loc.filename,
                      start_line=loc.start_line, end_line=loc.end_line,
                      ignore_cache=d.ignore_cache, step=label,
                      instruction=instruction or loc.keyword,
                      text=text, platform=format_platform(p) if p is not None else "")


def internal_meta(description: str, platform: Platform | None = None) -> OpMetadata:
    """An `[internal] …` op (build context, inline documents)."""
    return OpMetadata(description=description, text=description,
                      platform=format_platform(platform) if platform is not None else "")


def display(ctx: DispatchContext, loc: Loc, env: EnvList, **lex_flags: bool) -> str:
    """processCmdEnv + uppercaseCmd: the instruction text with variables expanded."""
    text = loc.text
    try:
        text = str(ShellLex(ctx.escape, **lex_flags).process_word(text, env.items))
    except (PybuildError, RecursionError):
        pass
    head, sep, rest = text.partition(" ")
    return head.upper() + sep + rest


def commit(ctx: DispatchContext, d: DispatchState, created_by: str, *, layer: bool = False,
           buildkit: bool = False) -> None:
    """commitToHistory."""
    if buildkit:
        created_by += " # buildkit"
    d.image.history.append(History(created=ctx.epoch, created_by=created_by,
                                   comment=HISTORY_COMMENT, empty_layer=not layer))


def healthcheck_string(hc: Healthcheck) -> str:
    """Go's %+v of dockerspec.HealthcheckConfig."""
    return (f"{{Test:[{' '.join(hc.test)}] Interval:{go_duration(hc.interval)} "
            f"Timeout:{go_duration(hc.timeout)} StartPeriod:{go_duration(hc.start_period)} "
            f"StartInterval:{go_duration(hc.start_interval)} Retries:{hc.retries}}}")


def run_command_string(args: list[str], build_args: list[tuple[str, str | None]],
                       env: EnvList) -> str:
    items: dict[str, str] = {}
    for key, value in build_args:
        v = env.get(key)
        items[key] = f"{key}={v if v is not None else (value or '')}"
    prefix = [f"|{len(items)}", *items.values()] if items else []
    return " ".join([*prefix, *args])


def summarize_heredoc(doc: str) -> str:
    doc = doc.strip()
    lines = doc.replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")

"""The global ARG scope (BuildKit's `defaultArgs`, `buildMetaArgs`), proxy args and
SOURCE_DATE_EPOCH."""

from __future__ import annotations

import time

from pybuild.errors import PybuildError, UserError
from pybuild.frontend.dockerfile2llb.history import format_platform, format_platform_all
from pybuild.frontend.dockerfile2llb.state import ArgInfo, DispatchContext, EnvList, fail
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import Loc

# Proxy build args reach every RUN without an ARG, outside the cache key (llb.ProxyEnv).
PROXY_ARGS = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
# Args that never reach a RUN environment even when declared (BuildKit's nonEnvArgs).
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


def parse_epoch(build_args: dict[str, str]) -> str:
    """SOURCE_DATE_EPOCH as the RFC 3339 time of history entries ("" when unset)."""
    raw = build_args.get("SOURCE_DATE_EPOCH", "")
    if not raw:
        return ""
    try:
        sec = int(raw)
    except ValueError:
        raise UserError(f"invalid SOURCE_DATE_EPOCH: {raw}") from None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))


def default_args(ctx: DispatchContext, target_name: str) -> EnvList:
    """The automatic platform args and TARGETSTAGE; a build arg of the same name wins."""
    b, t = ctx.build_platform, ctx.target_platform
    pairs = (
        ("BUILDPLATFORM", format_platform(b)), ("BUILDOS", b.os),
        ("BUILDOSVERSION", b.os_version), ("BUILDARCH", b.architecture),
        ("BUILDVARIANT", b.variant),
        ("TARGETPLATFORM", format_platform_all(t)), ("TARGETOS", t.os),
        ("TARGETOSVERSION", t.os_version), ("TARGETARCH", t.architecture),
        ("TARGETVARIANT", t.variant), ("TARGETSTAGE", target_name),
    )
    env = EnvList()
    for key, value in pairs:
        env.set(key, ctx.build_args.get(key, value))
    return env


def build_meta_args(ctx: DispatchContext, env: EnvList, meta: list[ins.ArgInstruction],
                    build_args: dict[str, str]) -> dict[str, ArgInfo]:
    """buildMetaArgs: ARGs before the first FROM, into `env`. Defaults are expanded in
    order against the scope so far; a build arg replaces a default without evaluating it.
    Returns each meta ARG's definition (for the outline and the FROM checks)."""
    infos: dict[str, ArgInfo] = {}
    for inst in meta:
        for decl in inst.args:
            deps: set[str] = set()
            if decl.key in build_args:
                value: str | None = build_args[decl.key]
            elif decl.value is not None:
                value, matched, _ = expand_with_matches(ctx, inst.loc, decl.value, env)
                deps = set(matched)
                if decl.key in deps:  # ARG FOO=${FOO}x: keep what the earlier FOO used
                    deps.discard(decl.key)
                    old = infos.get(decl.key)
                    deps |= old.deps if old is not None else set()
            else:
                value = None
            if value is not None:
                env.set(decl.key, value)
            infos[decl.key] = ArgInfo(key=decl.key, value=value or "", comment=decl.comment,
                                      loc=inst.loc, deps=frozenset(deps))
    return infos


def expand_with_matches(ctx: DispatchContext, loc: Loc, word: str, env: EnvList
                        ) -> tuple[str, set[str], set[str]]:
    """ProcessWordWithMatches: the expansion, the names it found and those it did not."""
    try:
        return ctx.lex.process_word_with_matches(word, env.items)
    except PybuildError as exc:
        raise fail(loc, exc.message) from None


def proxy_env(build_args: dict[str, str]) -> tuple[str, ...]:
    """proxyEnvFromBuildArgs: each proxy arg under both spellings."""
    out: dict[str, str] = {}
    for key, value in sorted(build_args.items()):
        low = key.lower()
        if low in PROXY_ARGS:
            out[low.upper()] = value
            out[low] = value
    return tuple(f"{k}={v}" for k, v in out.items())

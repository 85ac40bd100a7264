"""The global ARG scope (BuildKit's `defaultArgs`, `buildMetaArgs`), proxy args and
SOURCE_DATE_EPOCH."""

from __future__ import annotations

import time

from pybuild.errors import UserError
from pybuild.frontend.dockerfile2llb.history import format_platform, format_platform_all
from pybuild.frontend.dockerfile2llb.state import DispatchContext, EnvList
from pybuild.frontend.instructions import types as ins

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


def build_meta_args(ctx: DispatchContext, meta: list[ins.ArgInstruction]) -> None:
    """ARGs before the first FROM: defaults are expanded in order against the scope so far;
    a build arg replaces a default without evaluating it."""
    env = ctx.global_args
    for inst in meta:
        for decl in inst.args:
            if decl.key in ctx.build_args:
                value: str | None = ctx.build_args[decl.key]
            elif decl.value is not None:
                value = ctx.expand(inst.loc, decl.value, env)
            else:
                value = None
            if value is not None:
                env.set(decl.key, value)


def proxy_env(build_args: dict[str, str]) -> tuple[str, ...]:
    """proxyEnvFromBuildArgs: each proxy arg under both spellings."""
    out: dict[str, str] = {}
    for key, value in sorted(build_args.items()):
        low = key.lower()
        if low in PROXY_ARGS:
            out[low.upper()] = value
            out[low] = value
    return tuple(f"{k}={v}" for k, v in out.items())

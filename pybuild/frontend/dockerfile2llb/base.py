"""Base images and named contexts (BuildKit's `resolveReachableStages`,
`resolveBaseImage`, and the named-context half of `dockerui`)."""

from __future__ import annotations

from pybuild.errors import PybuildError, UserError
from pybuild.frontend.dockerfile2llb.history import format_platform, internal_meta, op_meta
from pybuild.frontend.dockerfile2llb.state import (
    EMPTY_IMAGE,
    DispatchContext,
    DispatchState,
    EnvList,
    ImageState,
    Phase,
    empty_image,
    fail,
)
from pybuild.frontend.dockerfile2llb.validations import validate_base_image_platform
from pybuild.frontend.instructions.loc import Loc, located
from pybuild.frontend.resolver import ImageAddress, ImageRef, LayoutRef, NamedContext
from pybuild.frontend.suggest import with_suggestion
from pybuild.llb import Input, SourceOp
from pybuild.oci.config import ImageConfig
from pybuild.oci.platform import Platform

_COMMON_IMAGES = ("alpine", "busybox", "centos", "debian", "golang", "ubuntu", "fedora")


def normalize(name: str, loc: Loc) -> tuple[str, str]:
    """(full reference, familiar name for named-context lookup)."""
    from pybuild.oci.reference import Reference

    try:
        ref = Reference.parse(name)
    except UserError as exc:
        raise fail(loc, f'failed to parse stage name "{name}": {exc.message}',
                   hint="a FROM or --from value must be an earlier stage name or an image "
                        "reference") from None
    familiar = ref.familiar
    if ref.digest is None:
        familiar = familiar.removesuffix(":latest")
    return str(ref), familiar


def _is_scratch(cfg: ImageConfig) -> bool:
    # schema1 images give no diff_ids: an image is empty only if its history says so too
    return not cfg.diff_ids and all(h.empty_layer for h in cfg.history)


def resolve_bases(ctx: DispatchContext, stages: list[DispatchState]) -> None:
    """Resolve the base image of each stage in `stages` that has no stage as its base."""
    for d in stages:
        if d.base is not None or d.phase >= Phase.RESOLVED:
            continue
        d.phase = Phase.RESOLVED
        if d.base_name == EMPTY_IMAGE:
            d.state = None
            d.image = empty_image(ctx.target_platform)
            d.platform = ctx.target_platform
        else:
            try:
                _resolve_image(ctx, d)
            except PybuildError as exc:
                raise located(exc, d.loc.location()) from None
        if d.kind == "implicit":
            d.phase = Phase.DISPATCHED


def _resolve_image(ctx: DispatchContext, d: DispatchState) -> None:
    orig = d.base_name
    platform = d.platform or ctx.target_platform
    nc = ctx.named.get(orig) if orig.lower() != "context" else None
    familiar = orig
    if nc is None:
        full, familiar = normalize(orig, d.loc)
        nc = ctx.named.get(familiar) if familiar.lower() != "context" else None
    if nc is not None:
        state, image = named_context(ctx, familiar, nc, platform, d.loc)
        d.image = image if image is not None else empty_image(ctx.target_platform)
        d.state = state
        d.platform = platform
        return
    try:
        resolved = ctx.resolver.resolve(str(ImageRef(ref=full)), platform)
    except UserError as exc:
        options = [s.stage_name for s in ctx.states if s.stage_name]
        for n in _COMMON_IMAGES:
            options += [n, f"docker.io/library{n}", f"{n}:latest",
                        f"docker.io/library{n}:latest"]
        raise fail(d.loc, with_suggestion(f"{orig}: {exc.message}", orig, options),
                   hint=exc.hint) from None
    d.image = image_from_config(resolved.config, keep_created=False)
    d.platform = platform
    if _is_scratch(resolved.config):
        d.state = None
        return
    cfg = resolved.config
    if cfg.os and cfg.architecture:
        validate_base_image_platform(
            ctx.lint, orig, platform, Platform(os=cfg.os, architecture=cfg.architecture,
                                               variant=cfg.variant, os_version=cfg.os_version),
            d.loc)
    ref = f"{resolved.name}@{resolved.digest}"
    d.base_name = ref
    d.state = ctx.add(
        SourceOp(identifier=f"docker-image://{ref}",
                 attrs=(("platform", format_platform(platform)),)),
        op_meta(ctx, d, d.loc, f"FROM {ref}", platform=platform, instruction="FROM"),
    )


def image_from_config(cfg: ImageConfig, *, keep_created: bool) -> ImageState:
    return ImageState(os=cfg.os or "linux", architecture=cfg.architecture,
                      variant=cfg.variant, os_version=cfg.os_version, author=cfg.author,
                      created=cfg.created if keep_created else "", config=cfg.config,
                      history=list(cfg.history))


def named_context(ctx: DispatchContext, name: str, nc: NamedContext, platform: Platform,
                  loc: Loc) -> tuple[Input | None, ImageState | None]:
    """The state (and image, unless a local directory) a named context stands for."""
    if nc.kind == "local":
        state = ctx.add(SourceOp(identifier=f"local://{name}", attrs=(("path", nc.value),)),
                        internal_meta(f"[internal] load build context {name}"))
        return state, None
    address: ImageAddress
    if nc.kind == "image":
        address = ImageRef(ref=normalize(nc.value, loc)[0])
    else:
        address = LayoutRef.parse(nc.value)
    try:
        resolved = ctx.resolver.resolve(str(address), platform)
    except UserError as exc:
        raise fail(loc, f"named context {name}: {exc.message}", hint=exc.hint) from None
    image = image_from_config(resolved.config, keep_created=True)
    if _is_scratch(resolved.config):
        return None, image
    if isinstance(address, LayoutRef):
        ident = f"oci-layout://{address.path}@{resolved.digest}"
    else:
        ident = f"docker-image://{resolved.name}@{resolved.digest}"
    state = ctx.add(
        SourceOp(identifier=ident, attrs=(("platform", format_platform(platform)),)),
        internal_meta(f"[context {name}] load {ident.split('://', 1)[1]}", platform))
    return state, image


def apply_named_stage(ctx: DispatchContext, d: DispatchState, nc: NamedContext) -> None:
    """A named context replaces a whole stage: its instructions never run."""
    d.kind = "named"
    d.phase = Phase.DISPATCHED
    platform = d.platform or ctx.target_platform
    state, image = named_context(ctx, d.name, nc, platform, d.loc)
    d.state = state
    if image is not None:
        d.image = image
        if image.os and image.architecture:
            d.platform = Platform(os=image.os, architecture=image.architecture,
                                  variant=image.variant, os_version=image.os_version)
    d.env = EnvList()
    for item in d.image.config.env:
        k, _, v = item.partition("=")
        d.env.set(k, v)
    d.dir = d.image.config.working_dir or "/"
    d.user = d.image.config.user

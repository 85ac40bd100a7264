"""Frontend subrequests: `--call=outline|targets|check` (buildx's `--call`, BuildKit's
`frontend.outline`, `frontend.targets` and `frontend.lint` requests).

A call runs the frontend only: nothing is built, exported, tagged or recorded. `outline`
and `check` resolve base images as a build does (their configs decide ONBUILD triggers,
platforms and some checks); `targets` only parses. The answers are the frontend's values
(`frontend.subrequests`), with the text and JSON forms buildx prints (see
`cli/call_command.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.frontend.subrequests import LintReport, Outline, TargetList
    from pybuild.request import BuildRequest
    from pybuild.root import Root

CallName = Literal["outline", "targets", "check"]
CALLS: tuple[str, ...] = get_args(CallName)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFunc:
    """A parsed `--call` value (buildx's `buildflags.CallFunc`): the request, `format`
    ("" for text, or "json") and `ignore_status` (exit 0 even when the check found
    something)."""

    name: CallName
    format: Literal["", "json"] = ""
    ignore_status: bool = False


def run(request: BuildRequest, root: Root,
        name: CallName) -> Outline | TargetList | LintReport:
    """The frontend's answer to `name` for the request's Dockerfile, target, build args
    and (first) platform. The request's inputs must be local (see `contexts`)."""
    from pybuild import job

    if name not in CALLS:
        raise UserError(f"unsupported request {name!r}: use one of {', '.join(CALLS)}",
                        code="bad-flag")
    data, _, _, _, inputs = job.frontend_inputs(request)
    opts = inputs[0].options()
    if name == "targets":
        from pybuild.frontend.dockerfile2llb.convert import list_targets

        return list_targets(data, opts.filename)
    from pybuild.resolver import StoreResolver

    resolver = StoreResolver(root.content, root.images, registry=request.registry,
                             pull=request.pull)
    if name == "outline":
        from pybuild.frontend.dockerfile2llb.convert import outline

        return outline(opts, resolver)
    from pybuild.frontend.dockerfile2llb.convert import lint

    return lint(opts, resolver)

"""What a target uses: build args, secrets, SSH ids (BuildKit's `outline.go`), collected
while dispatching and turned into the `frontend.outline` answer."""

from __future__ import annotations

from pybuild.frontend.dockerfile2llb.state import DispatchState
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.results import SourceRange
from pybuild.frontend.subrequests import Outline, OutlineArg, OutlineSecret


def source_range(loc: Loc) -> SourceRange:
    return SourceRange(start_line=loc.start_line, end_line=loc.end_line)


def _walk(d: DispatchState, seen: set[int]) -> list[DispatchState]:
    """`d`, its base and its sources, depth first, each once."""
    if id(d) in seen:
        return []
    seen.add(id(d))
    out = [d]
    if d.base is not None:
        out += _walk(d.base, seen)
    for dep, _ in d.deps:
        out += _walk(dep, seen)
    return out


def build_outline(target: DispatchState, source: bytes) -> Outline:
    """dispatchState.Outline: the args used by the target and everything it needs (each
    name once, the nearest definition first), its secrets and SSH ids, by line."""
    args: list[OutlineArg] = []
    secrets: list[OutlineSecret] = []
    ssh: list[OutlineSecret] = []
    seen_args: set[str] = set()
    seen_secrets: set[str] = set()
    seen_ssh: set[str] = set()
    for d in _walk(target, set()):
        o = d.outline
        o.mark_all_used(set(o.used_args), set())
        for k in sorted(o.used_args):
            info = o.all_args.get(k)
            if info is not None and k not in seen_args:
                seen_args.add(k)
                args.append(OutlineArg(name=info.key, value=info.value,
                                       description=info.comment,
                                       location=source_range(info.loc)))
        for name, m in o.secrets.items():
            if name not in seen_secrets:
                seen_secrets.add(name)
                secrets.append(OutlineSecret(name=name, required=m.required,
                                             location=source_range(m.loc)))
        for name, m in o.ssh.items():
            if name not in seen_ssh:
                seen_ssh.add(name)
                ssh.append(OutlineSecret(name=name, required=m.required,
                                         location=source_range(m.loc)))

    def line(x: OutlineArg | OutlineSecret) -> int:
        return x.location.start_line if x.location else 0

    from_ = target.from_
    return Outline(name=target.name, description=from_.comment if from_ else "",
                   args=tuple(sorted(args, key=line)), secrets=tuple(sorted(secrets, key=line)),
                   ssh=tuple(sorted(ssh, key=line)), sources=(source,))

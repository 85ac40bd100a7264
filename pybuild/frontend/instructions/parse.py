"""AST node -> typed instruction (BuildKit's `instructions/parse.go`).

Arity, flags and forms are checked exactly as BuildKit's `parse.go` and `bflag.go` do;
variable expansion happens later, at dispatch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybuild.errors import PybuildError, UserError
from pybuild.frontend.instructions import runmount
from pybuild.frontend.instructions.flags import Flags
from pybuild.frontend.instructions.loc import Loc, located
from pybuild.frontend.instructions.types import (
    ArgDecl,
    ArgInstruction,
    CmdInstruction,
    CopyInstruction,
    EntrypointInstruction,
    EnvInstruction,
    ExposeInstruction,
    FromInstruction,
    HealthcheckInstruction,
    InlineFile,
    Instruction,
    KeyValue,
    LabelInstruction,
    MaintainerInstruction,
    OnbuildInstruction,
    RunInstruction,
    ShellInstruction,
    SourceContent,
    StopSignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
)
from pybuild.frontend.suggest import with_suggestion
from pybuild.gocompat import go_quote, parse_go_duration

if TYPE_CHECKING:
    from pybuild.frontend.dockerfile.parser import Node

KNOWN_INSTRUCTIONS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
    "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume",
    "workdir",
)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*\Z")
NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")


# --- parsing ---------------------------------------------------------------------------


def _args(node: Node) -> list[str]:
    """BuildKit's `nodeArgs`: values of the chain; a nested ONBUILD node contributes its
    keyword and its own arguments."""
    out: list[str] = []
    n: Node | None = node
    while n is not None and n.next is not None:
        arg = n.next
        if not arg.children:
            out.append(arg.value)
        elif len(arg.children) == 1:
            sub = arg.children[0]
            out.append(sub.value)
            out.extend(_args(sub))
        n = arg
    return out


def node_loc(node: Node, filename: str) -> Loc:
    keyword = (node.keyword or node.value).upper()
    return Loc(filename=filename, start_line=node.start_line, end_line=node.end_line,
               keyword=keyword, text=node.original)


@dataclass(slots=True)
class _Req:
    node: Node
    loc: Loc
    args: list[str]
    flags: Flags
    written: str  # the keyword as written

    @property
    def is_json(self) -> bool:
        return bool(self.node.attributes.get("json"))

    @property
    def common(self) -> dict[str, Any]:
        """The fields every instruction has."""
        return {"loc": self.loc, "name": self.written,
                "comments": tuple(self.node.prev_comment)}


def parse_instruction(node: Node, filename: str) -> Instruction:
    loc = node_loc(node, filename)
    value = node.value.lower()
    parser = _PARSERS.get(value)
    written = node.keyword or node.value
    if parser is None:
        raise loc.error(with_suggestion(f"unknown instruction: {written}", written,
                                        KNOWN_INSTRUCTIONS, case_sensitive=False))
    req = _Req(node, loc, _args(node), Flags(list(node.flags), loc), written)
    try:
        return parser(req)
    except PybuildError as exc:
        raise located(exc, loc.location()) from None


def _exactly_one(req: _Req) -> None:
    if len(req.args) != 1:
        raise req.loc.error(f"{req.loc.keyword} requires exactly one argument")


def _at_least_one(req: _Req) -> None:
    if not req.args:
        raise req.loc.error(f"{req.loc.keyword} requires at least one argument")


def _kvps(req: _Req) -> tuple[KeyValue, ...]:
    args = req.args
    if not args:
        raise req.loc.error(f"{req.loc.keyword} requires at least one argument")
    if len(args) % 3:
        raise req.loc.error(f"Bad input to {req.loc.keyword}, too many arguments")
    out = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise req.loc.error(f"{req.loc.keyword} names can not be blank")
        out.append(KeyValue(key=args[i], value=args[i + 1], no_delim=args[i + 2] == ""))
    return tuple(out)


def _get_comment(comments: list[str], name: str) -> str:
    if not name:
        return ""
    for line in comments:
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""


def _parse_env(req: _Req) -> Instruction:
    req.flags.parse()
    return EnvInstruction(**req.common, pairs=_kvps(req))


def _parse_label(req: _Req) -> Instruction:
    req.flags.parse()
    return LabelInstruction(**req.common, pairs=_kvps(req))


def _parse_maintainer(req: _Req) -> Instruction:
    _exactly_one(req)
    req.flags.parse()
    return MaintainerInstruction(**req.common, maintainer=req.args[0])


def _sources_and_dest(req: _Req) -> tuple[tuple[str, ...], str, tuple[SourceContent, ...]]:
    from pybuild.frontend.dockerfile.parser import chomp_heredoc_content, must_parse_heredoc

    srcs, dest = req.args[:-1], req.args[-1]
    if must_parse_heredoc(dest) is not None:
        raise req.loc.error(f"{req.loc.keyword} cannot accept a heredoc as a destination")
    lookup = {h.name: h for h in req.node.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in srcs:
        doc = must_parse_heredoc(src)
        if doc is None:
            paths.append(src)
            continue
        found = lookup.get(doc.name)
        data = found.content if found is not None else ""
        if doc.chomp:
            data = chomp_heredoc_content(data)
        contents.append(SourceContent(path=doc.name, data=data, expand=doc.expand))
    return tuple(paths), dest, tuple(contents)


def _no_destination(req: _Req) -> None:
    if len(req.args) < 2:
        raise req.loc.error(f"{req.loc.keyword} requires at least two arguments, but only "
                            "one was provided. Destination could not be determined")


def _parse_add(req: _Req) -> Instruction:
    _no_destination(req)
    f = req.flags
    f.add_strings("exclude")
    f.add_string("chown")
    f.add_string("chmod")
    f.add_bool("link")
    f.add_bool("keep-git-dir")
    f.add_string("checksum")
    f.add_bool("unpack")
    f.parse()
    sources, dest, contents = _sources_and_dest(req)
    return CopyInstruction(
        **req.common, sources=sources, dest=dest, contents=contents, chown=f.string("chown"),
        chmod=f.string("chmod"), link=f.boolean("link"), exclude=f.strings("exclude"),
        is_add=True, checksum=f.string("checksum"),
        keep_git_dir=f.optional_bool("keep-git-dir"), unpack=f.optional_bool("unpack"))


def _parse_copy(req: _Req) -> Instruction:
    _no_destination(req)
    f = req.flags
    f.add_strings("exclude")
    f.add_bool("parents")
    f.add_string("chown")
    f.add_string("from")
    f.add_string("chmod")
    f.add_bool("link")
    f.parse()
    sources, dest, contents = _sources_and_dest(req)
    return CopyInstruction(
        **req.common, sources=sources, dest=dest, contents=contents, from_=f.string("from"),
        chown=f.string("chown"), chmod=f.string("chmod"), link=f.boolean("link"),
        parents=f.boolean("parents"), exclude=f.strings("exclude"))


def _parse_from(req: _Req) -> Instruction:
    args = req.args
    name = ""
    as_word = ""
    if len(args) == 3 and args[1].lower() == "as":
        as_word = args[1]
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise req.loc.error(f"invalid name for build stage: {go_quote(args[2])}, name can't "
                                "start with a number or contain symbols")
    elif len(args) != 1:
        raise req.loc.error("FROM requires either one or three arguments",
                            hint="use FROM <image> or FROM <image> AS <name>")
    req.flags.add_string("platform")
    req.flags.parse()
    return FromInstruction(**req.common, image=args[0], stage_name=name,
                           platform=req.flags.string("platform"), as_word=as_word,
                           comment=_get_comment(list(req.node.prev_comment), name))


def _parse_onbuild(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    trigger = req.args[0].strip().upper()
    if trigger == "ONBUILD":
        raise req.loc.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise req.loc.error(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", req.node.original, count=1)
    for h in req.node.heredocs:
        expression += "\n" + h.content + h.name
    return OnbuildInstruction(**req.common, expression=expression)


def _parse_workdir(req: _Req) -> Instruction:
    _exactly_one(req)
    req.flags.parse()
    return WorkdirInstruction(**req.common, path=req.args[0])


def _json_args(req: _Req) -> tuple[str, ...]:
    if req.is_json:
        return tuple(req.args)
    return (" ".join(req.args),) if req.args else ()


def _inline_files(req: _Req) -> tuple[InlineFile, ...]:
    return tuple(InlineFile(name=h.name, data=h.content, chomp=h.chomp)
                 for h in req.node.heredocs)


def _parse_run(req: _Req) -> Instruction:
    f = req.flags
    f.add_strings("mount")
    f.add_string("network", "default")
    f.add_string("security", "sandbox")
    f.add_strings("device")
    f.parse()
    mounts = f.strings("mount")
    for spec in mounts:
        try:
            runmount.parse_mount(spec, None)
        except UserError as exc:
            raise req.loc.error(exc.message) from None
    network = f.string("network")
    if network not in NETWORK_MODES:
        raise req.loc.error(f"network mode {go_quote(network)} not supported",
                            hint="use --network=default, none or host")
    security = f.string("security")
    if security not in SECURITY_MODES:
        raise req.loc.error(f"security {go_quote(security)} is not valid",
                            hint="use --security=sandbox or insecure")
    return RunInstruction(**req.common, cmd_line=_json_args(req), prepend_shell=not req.is_json,
                          files=_inline_files(req), mounts=mounts, network=network,
                          security=security, devices=f.strings("device"),
                          flags_used=tuple(sorted(f.used)))


def _parse_cmd(req: _Req) -> Instruction:
    req.flags.parse()
    return CmdInstruction(**req.common, cmd_line=_json_args(req), prepend_shell=not req.is_json)


def _parse_entrypoint(req: _Req) -> Instruction:
    req.flags.parse()
    args = _json_args(req)
    return EntrypointInstruction(**req.common, cmd_line=args or None,
                                 prepend_shell=not req.is_json)


def _opt_interval(req: _Req, name: str) -> int:
    raw = req.flags.string(name)
    if raw == "":
        return 0
    try:
        ns = parse_go_duration(raw)
    except ValueError as exc:
        raise req.loc.error(str(exc)) from None
    if ns == 0:
        return 0
    if ns < 1_000_000:
        raise req.loc.error(f'Interval "{name}" cannot be less than 1ms')
    return ns


def _parse_healthcheck(req: _Req) -> Instruction:
    _at_least_one(req)
    typ = req.args[0].upper()
    rest = req.args[1:]
    if typ == "NONE":
        # BuildKit never parses flags for HEALTHCHECK NONE: they are silently ignored.
        if rest:
            raise req.loc.error("HEALTHCHECK NONE takes no arguments")
        return HealthcheckInstruction(**req.common, test=("NONE",))
    f = req.flags
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        f.add_string(name)
    f.parse()
    if typ != "CMD":
        raise req.loc.error(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    cmd = list(rest) if req.is_json else ([" ".join(rest)] if rest else [])
    if not cmd:
        raise req.loc.error("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *cmd) if req.is_json else ("CMD-SHELL", *cmd)
    durations = {n: _opt_interval(req, n)
                 for n in ("interval", "timeout", "start-period", "start-interval")}
    retries = 0
    raw = f.string("retries")
    if raw != "":
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise req.loc.error(f'strconv.ParseInt: parsing {go_quote(raw)}: invalid syntax')
        retries = int(raw)
        if not -(2**31) <= retries < 2**31:
            raise req.loc.error(f'strconv.ParseInt: parsing {go_quote(raw)}: value out of range')
        if retries < 0:
            raise req.loc.error(f"--retries cannot be negative ({retries})")
    return HealthcheckInstruction(
        **req.common, test=test, interval=durations["interval"], timeout=durations["timeout"],
        start_period=durations["start-period"], start_interval=durations["start-interval"],
        retries=retries)


def _parse_expose(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    return ExposeInstruction(**req.common, ports=tuple(sorted(req.args)))


def _parse_user(req: _Req) -> Instruction:
    _exactly_one(req)
    req.flags.parse()
    return UserInstruction(**req.common, user=req.args[0])


def _parse_volume(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    vols = []
    for v in req.args:
        v = v.strip()
        if not v:
            raise req.loc.error("VOLUME specified can not be an empty string")
        vols.append(v)
    return VolumeInstruction(**req.common, volumes=tuple(vols))


def _parse_stopsignal(req: _Req) -> Instruction:
    # BuildKit never calls the flag parser for STOPSIGNAL: flags are silently ignored.
    _exactly_one(req)
    return StopSignalInstruction(**req.common, signal=req.args[0])


def _parse_arg(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    out = []
    for word in req.args:
        value: str | None = None
        key = word
        if "=" in word:
            key, _, value = word.partition("=")
            if not key:
                raise req.loc.error("ARG names can not be blank")
        out.append(ArgDecl(key=key, value=value,
                           comment=_get_comment(list(req.node.prev_comment), key)))
    return ArgInstruction(**req.common, args=tuple(out))


def _parse_shell(req: _Req) -> Instruction:
    req.flags.parse()
    args = _json_args(req)
    if not args:
        raise req.loc.error("SHELL requires at least one argument")
    if not req.is_json:
        raise req.loc.error("SHELL requires the arguments to be in JSON form",
                            hint='e.g. SHELL ["/bin/bash", "-c"]')
    return ShellInstruction(**req.common, shell=args)


_PARSERS = {
    "env": _parse_env,
    "maintainer": _parse_maintainer,
    "label": _parse_label,
    "add": _parse_add,
    "copy": _parse_copy,
    "from": _parse_from,
    "onbuild": _parse_onbuild,
    "workdir": _parse_workdir,
    "run": _parse_run,
    "cmd": _parse_cmd,
    "healthcheck": _parse_healthcheck,
    "entrypoint": _parse_entrypoint,
    "expose": _parse_expose,
    "user": _parse_user,
    "volume": _parse_volume,
    "stopsignal": _parse_stopsignal,
    "arg": _parse_arg,
    "shell": _parse_shell,
}




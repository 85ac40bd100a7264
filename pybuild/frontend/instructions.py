"""Typed Dockerfile instructions, parsed from the syntax tree (BuildKit's `instructions`).

This layer checks arity, flags and forms exactly as BuildKit's `instructions/parse.go` and
`bflag.go` do; variable expansion happens later, at dispatch, because it needs the build
state's environment at that point (see `convert.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pybuild.errors import DockerfileSyntaxError, PybuildError, SourceLocation, UserError
from pybuild.frontend import runmount

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


# --- locations and suggestions ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Loc:
    filename: str
    start_line: int
    end_line: int
    keyword: str
    text: str

    def location(self) -> SourceLocation:
        return SourceLocation(self.filename, self.start_line, self.end_line,
                              instruction=self.keyword, text=self.text)

    def error(self, message: str, *, hint: str | None = None,
              cls: type[UserError] = DockerfileSyntaxError) -> UserError:
        return cls(message, location=self.location(), hint=hint)


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(value: str, options: list[str] | tuple[str, ...], *,
            case_sensitive: bool = True) -> str | None:
    """BuildKit's `suggest.WrapErrorMaybe`: the closest option at distance < 3, or None
    (also None on an exact match: the error was then about something else)."""
    orig = value
    if not case_sensitive:
        value = value.lower()
    match: str | None = None
    best = 3
    for opt in options:
        cmp = opt if case_sensitive else opt.lower()
        if cmp == value:
            return None
        dist = levenshtein(value, cmp)
        if dist < best:
            best = dist
            if case_sensitive:
                match = opt
            elif orig == orig.lower():
                match = cmp.lower()
            elif orig == orig.upper():
                match = cmp.upper()
            else:
                match = cmp
    return match


def with_suggestion(message: str, value: str, options: list[str] | tuple[str, ...], *,
                    case_sensitive: bool = True) -> str:
    match = suggest(value, options, case_sensitive=case_sensitive)
    return f"{message} (did you mean {match}?)" if match else message


# --- flags -----------------------------------------------------------------------------


class Flags:
    """BuildKit's BFlags: flags are declared per instruction, then `parse()` checks them in
    the order written: `--name=value`, or bare `--name` for a bool; `--` stops parsing."""

    def __init__(self, raw: list[str], loc: Loc) -> None:
        self._raw = raw
        self._loc = loc
        self._types: dict[str, str] = {}
        self._values: dict[str, str] = {}
        self._lists: dict[str, list[str]] = {}
        self.used: set[str] = set()

    def add_bool(self, name: str) -> None:
        self._types[name] = "bool"

    def add_string(self, name: str, default: str = "") -> None:
        self._types[name] = "string"
        self._values[name] = default

    def add_strings(self, name: str) -> None:
        self._types[name] = "strings"
        self._lists[name] = []

    def parse(self) -> None:
        for arg in self._raw:
            if arg == "--":
                return
            if not arg.startswith("--"):
                raise self._loc.error(f"arg should start with -- : {arg}")
            name, eq, value = arg[2:].partition("=")
            kind = self._types.get(name)
            if kind is None:
                raise self._loc.error(with_suggestion(f"unknown flag: --{name}", name,
                                                      list(self._types)))
            if name in self.used and kind != "strings":
                raise self._loc.error(f"duplicate flag specified: {name}")
            self.used.add(name)
            if kind == "bool":
                if eq and value == "":
                    raise self._loc.error(f"missing a value on flag: {name}")
                lower = value.lower()
                if lower not in ("", "true", "false"):
                    raise self._loc.error(
                        f"expecting boolean value for flag {name}, not: {value}")
                self._values[name] = "false" if lower == "false" else "true"
            elif not eq:
                raise self._loc.error(f"missing a value on flag: {name}")
            elif kind == "string":
                self._values[name] = value
            else:
                self._lists[name].append(value)

    def string(self, name: str) -> str:
        return self._values.get(name, "")

    def boolean(self, name: str) -> bool:
        return self._values.get(name) == "true"

    def optional_bool(self, name: str) -> bool | None:
        return self.boolean(name) if name in self.used else None

    def strings(self, name: str) -> list[str]:
        return list(self._lists.get(name, []))


# --- instructions ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class KeyValue:
    key: str
    value: str
    no_delim: bool = False


@dataclass(slots=True, kw_only=True)
class ArgDecl:
    key: str
    value: str | None  # raw default, expanded at dispatch
    comment: str = ""


@dataclass(slots=True, kw_only=True)
class Instruction:
    loc: Loc
    name: str = ""  # the keyword as written (for casing lints)

    @property
    def keyword(self) -> str:
        return self.loc.keyword


@dataclass(slots=True, kw_only=True)
class FromInstruction(Instruction):
    image: str
    stage_name: str  # lower-cased; "" when unnamed
    platform: str
    as_word: str = ""
    comment: str = ""


@dataclass(slots=True, kw_only=True)
class InlineFile:
    name: str
    data: str
    chomp: bool = False


@dataclass(slots=True, kw_only=True)
class RunInstruction(Instruction):
    cmd_line: list[str]
    prepend_shell: bool
    files: list[InlineFile] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    network: str = "default"
    security: str = "sandbox"
    devices: list[str] = field(default_factory=list)
    flags_used: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class CmdInstruction(Instruction):
    cmd_line: list[str]
    prepend_shell: bool


@dataclass(slots=True, kw_only=True)
class EntrypointInstruction(Instruction):
    cmd_line: list[str] | None
    prepend_shell: bool


@dataclass(slots=True, kw_only=True)
class SourceContent:
    """A heredoc used as a COPY/ADD source: a file called `path` holding `data`."""

    path: str
    data: str
    expand: bool


@dataclass(slots=True, kw_only=True)
class CopyInstruction(Instruction):
    sources: list[str]
    dest: str
    contents: list[SourceContent] = field(default_factory=list)
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    exclude: list[str] = field(default_factory=list)
    # ADD only
    is_add: bool = False
    checksum: str = ""
    keep_git_dir: bool | None = None
    unpack: bool | None = None


@dataclass(slots=True, kw_only=True)
class EnvInstruction(Instruction):
    pairs: list[KeyValue]


@dataclass(slots=True, kw_only=True)
class LabelInstruction(Instruction):
    pairs: list[KeyValue]


@dataclass(slots=True, kw_only=True)
class ArgInstruction(Instruction):
    args: list[ArgDecl]


@dataclass(slots=True, kw_only=True)
class WorkdirInstruction(Instruction):
    path: str


@dataclass(slots=True, kw_only=True)
class UserInstruction(Instruction):
    user: str


@dataclass(slots=True, kw_only=True)
class ExposeInstruction(Instruction):
    ports: list[str]


@dataclass(slots=True, kw_only=True)
class VolumeInstruction(Instruction):
    volumes: list[str]


@dataclass(slots=True, kw_only=True)
class StopSignalInstruction(Instruction):
    signal: str


@dataclass(slots=True, kw_only=True)
class ShellInstruction(Instruction):
    shell: list[str]


@dataclass(slots=True, kw_only=True)
class MaintainerInstruction(Instruction):
    maintainer: str


@dataclass(slots=True, kw_only=True)
class HealthcheckInstruction(Instruction):
    test: list[str]
    interval: int = 0  # nanoseconds
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(slots=True, kw_only=True)
class OnbuildInstruction(Instruction):
    expression: str


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

    @property
    def is_json(self) -> bool:
        return bool(self.node.attributes.get("json"))


def parse_instruction(node: Node, filename: str) -> Instruction:
    loc = node_loc(node, filename)
    value = node.value.lower()
    parser = _PARSERS.get(value)
    written = node.keyword or node.value
    if parser is None:
        raise loc.error(with_suggestion(f"unknown instruction: {written}", written,
                                        KNOWN_INSTRUCTIONS, case_sensitive=False))
    req = _Req(node, loc, _args(node), Flags(list(node.flags), loc))
    try:
        inst = parser(req)
    except PybuildError as exc:
        if exc.location is None:
            exc.location = loc.location()
        raise
    inst.name = written
    return inst


def _exactly_one(req: _Req) -> None:
    if len(req.args) != 1:
        raise req.loc.error(f"{req.loc.keyword} requires exactly one argument")


def _at_least_one(req: _Req) -> None:
    if not req.args:
        raise req.loc.error(f"{req.loc.keyword} requires at least one argument")


def _kvps(req: _Req) -> list[KeyValue]:
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
    return out


def _get_comment(comments: list[str], name: str) -> str:
    if not name:
        return ""
    for line in comments:
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""


def _parse_env(req: _Req) -> Instruction:
    req.flags.parse()
    return EnvInstruction(loc=req.loc, pairs=_kvps(req))


def _parse_label(req: _Req) -> Instruction:
    req.flags.parse()
    return LabelInstruction(loc=req.loc, pairs=_kvps(req))


def _parse_maintainer(req: _Req) -> Instruction:
    _exactly_one(req)
    req.flags.parse()
    return MaintainerInstruction(loc=req.loc, maintainer=req.args[0])


def _sources_and_dest(req: _Req) -> tuple[list[str], str, list[SourceContent]]:
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
    return paths, dest, contents


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
        loc=req.loc, sources=sources, dest=dest, contents=contents, chown=f.string("chown"),
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
        loc=req.loc, sources=sources, dest=dest, contents=contents, from_=f.string("from"),
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
            raise req.loc.error(f"invalid name for build stage: {_go_q(args[2])}, name can't "
                                "start with a number or contain symbols")
    elif len(args) != 1:
        raise req.loc.error("FROM requires either one or three arguments",
                            hint="use FROM <image> or FROM <image> AS <name>")
    req.flags.add_string("platform")
    req.flags.parse()
    return FromInstruction(loc=req.loc, image=args[0], stage_name=name,
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
    return OnbuildInstruction(loc=req.loc, expression=expression)


def _parse_workdir(req: _Req) -> Instruction:
    _exactly_one(req)
    req.flags.parse()
    return WorkdirInstruction(loc=req.loc, path=req.args[0])


def _json_args(req: _Req) -> list[str]:
    if req.is_json:
        return list(req.args)
    return [" ".join(req.args)] if req.args else []


def _inline_files(req: _Req) -> list[InlineFile]:
    return [InlineFile(name=h.name, data=h.content, chomp=h.chomp) for h in req.node.heredocs]


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
        raise req.loc.error(f"network mode {_go_q(network)} not supported",
                            hint="use --network=default, none or host")
    security = f.string("security")
    if security not in SECURITY_MODES:
        raise req.loc.error(f"security {_go_q(security)} is not valid",
                            hint="use --security=sandbox or insecure")
    return RunInstruction(loc=req.loc, cmd_line=_json_args(req), prepend_shell=not req.is_json,
                          files=_inline_files(req), mounts=mounts, network=network,
                          security=security, devices=f.strings("device"),
                          flags_used=tuple(sorted(f.used)))


def _parse_cmd(req: _Req) -> Instruction:
    req.flags.parse()
    return CmdInstruction(loc=req.loc, cmd_line=_json_args(req), prepend_shell=not req.is_json)


def _parse_entrypoint(req: _Req) -> Instruction:
    req.flags.parse()
    args = _json_args(req)
    return EntrypointInstruction(loc=req.loc, cmd_line=args or None,
                                 prepend_shell=not req.is_json)


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    orig = text
    if text in ("0", "+0", "-0"):
        return 0
    if not text:
        raise ValueError(f"time: invalid duration {_go_q(orig)}")
    sign = 1
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if not text:
        raise ValueError(f"time: invalid duration {_go_q(orig)}")
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)", text[pos:]):
                unit = re.match(r"(?:\d+(?:\.\d*)?|\.\d+)(\D*)", text[pos:])
                if unit and not unit.group(1):
                    raise ValueError(f"time: missing unit in duration {_go_q(orig)}")
                raise ValueError(f"time: unknown unit {_go_q(unit.group(1) if unit else '')} "
                                 f"in duration {_go_q(orig)}")
            raise ValueError(f"time: invalid duration {_go_q(orig)}")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if total > 2**63 - 1:
        raise ValueError(f"time: invalid duration {_go_q(orig)}")
    return sign * round(total)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


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
        return HealthcheckInstruction(loc=req.loc, test=["NONE"])
    f = req.flags
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        f.add_string(name)
    f.parse()
    if typ != "CMD":
        raise req.loc.error(f"Unknown type {_go_q(typ)} in HEALTHCHECK (try CMD)")
    cmd = list(rest) if req.is_json else ([" ".join(rest)] if rest else [])
    if not cmd:
        raise req.loc.error("Missing command after HEALTHCHECK CMD")
    test = ["CMD", *cmd] if req.is_json else ["CMD-SHELL", *cmd]
    durations = {n: _opt_interval(req, n)
                 for n in ("interval", "timeout", "start-period", "start-interval")}
    retries = 0
    raw = f.string("retries")
    if raw != "":
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise req.loc.error(f'strconv.ParseInt: parsing {_go_q(raw)}: invalid syntax')
        retries = int(raw)
        if not -(2**31) <= retries < 2**31:
            raise req.loc.error(f'strconv.ParseInt: parsing {_go_q(raw)}: value out of range')
        if retries < 0:
            raise req.loc.error(f"--retries cannot be negative ({retries})")
    return HealthcheckInstruction(
        loc=req.loc, test=test, interval=durations["interval"], timeout=durations["timeout"],
        start_period=durations["start-period"], start_interval=durations["start-interval"],
        retries=retries)


def _parse_expose(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    return ExposeInstruction(loc=req.loc, ports=sorted(req.args))


def _parse_user(req: _Req) -> Instruction:
    _exactly_one(req)
    req.flags.parse()
    return UserInstruction(loc=req.loc, user=req.args[0])


def _parse_volume(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    vols = []
    for v in req.args:
        v = v.strip()
        if not v:
            raise req.loc.error("VOLUME specified can not be an empty string")
        vols.append(v)
    return VolumeInstruction(loc=req.loc, volumes=vols)


def _parse_stopsignal(req: _Req) -> Instruction:
    # BuildKit never calls the flag parser for STOPSIGNAL: flags are silently ignored.
    _exactly_one(req)
    return StopSignalInstruction(loc=req.loc, signal=req.args[0])


def _parse_arg(req: _Req) -> Instruction:
    _at_least_one(req)
    req.flags.parse()
    out = []
    for word in req.args:
        if "=" in word:
            key, _, value = word.partition("=")
            if not key:
                raise req.loc.error("ARG names can not be blank")
            decl = ArgDecl(key=key, value=value)
        else:
            decl = ArgDecl(key=word, value=None)
        decl.comment = _get_comment(list(req.node.prev_comment), decl.key)
        out.append(decl)
    return ArgInstruction(loc=req.loc, args=out)


def _parse_shell(req: _Req) -> Instruction:
    req.flags.parse()
    args = _json_args(req)
    if not args:
        raise req.loc.error("SHELL requires at least one argument")
    if not req.is_json:
        raise req.loc.error("SHELL requires the arguments to be in JSON form",
                            hint='e.g. SHELL ["/bin/bash", "-c"]')
    return ShellInstruction(loc=req.loc, shell=args)


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


def _go_q(s: str) -> str:
    from pybuild.frontend.dockerfile.goquote import go_quote

    return go_quote(s)

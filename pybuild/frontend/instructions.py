"""Typed Dockerfile instructions, parsed from the syntax tree (BuildKit's `instructions`).

This layer checks arity, flags and forms; variable expansion happens later, at dispatch,
because it needs the build state's environment at that point.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pybuild.errors import DockerfileSyntaxError, SourceLocation, UserError

if TYPE_CHECKING:
    from pybuild.frontend.dockerfile.parser import Heredoc, Node

KNOWN_INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Loc:
    filename: str
    start_line: int
    end_line: int
    keyword: str
    text: str

    def error(self, message: str, *, hint: str | None = None,
              cls: type[UserError] = DockerfileSyntaxError) -> UserError:
        return cls(
            message,
            location=SourceLocation(self.filename, self.start_line, self.end_line,
                                    instruction=self.keyword, text=self.text),
            hint=hint,
        )


# --- flags -----------------------------------------------------------------------------


class Flags:
    """BuildKit's BFlags: `--name=value` or bare `--name` (bool), validated per instruction."""

    def __init__(self, raw: list[str], loc: Loc) -> None:
        self._loc = loc
        self._values: dict[str, list[str | None]] = {}
        for item in raw:
            if not item.startswith("--"):
                raise loc.error(f"invalid flag format {item!r}")
            name, eq, value = item[2:].partition("=")
            self._values.setdefault(name, []).append(value if eq else None)
        self._known: set[str] = set()

    def _take(self, name: str) -> list[str | None]:
        self._known.add(name)
        return self._values.get(name, [])

    def string(self, name: str, default: str = "") -> str:
        values = self._take(name)
        if not values:
            return default
        if len(values) > 1:
            raise self._loc.error(f"duplicate flag specified: {name}")
        if values[0] is None:
            raise self._loc.error(f"missing a value on flag: {name}")
        return values[0]

    def has(self, name: str) -> bool:
        return name in self._values

    def boolean(self, name: str) -> bool | None:
        values = self._take(name)
        if not values:
            return None
        if len(values) > 1:
            raise self._loc.error(f"duplicate flag specified: {name}")
        v = (values[0] or "true").lower()
        if v not in ("true", "false"):
            raise self._loc.error(f"expecting boolean value for flag {name}, not: {values[0]}")
        return v == "true"

    def strings(self, name: str) -> list[str]:
        out = []
        for v in self._take(name):
            if v is None:
                raise self._loc.error(f"missing a value on flag: {name}")
            out.append(v)
        return out

    def finish(self) -> None:
        for name in self._values:
            if name not in self._known:
                hint = _did_you_mean(name, sorted(self._known))
                msg = f"unknown flag: --{name}"
                raise self._loc.error(msg + (f" (did you mean --{hint}?)" if hint else ""))


def _did_you_mean(word: str, options: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return matches[0] if matches else None


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


@dataclass(slots=True, kw_only=True)
class Instruction:
    loc: Loc

    @property
    def keyword(self) -> str:
        return self.loc.keyword


@dataclass(slots=True, kw_only=True)
class FromInstruction(Instruction):
    image: str
    name: str
    platform: str


@dataclass(slots=True, kw_only=True)
class RunInstruction(Instruction):
    cmd_line: list[str]
    prepend_shell: bool
    heredocs: list[Heredoc] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    network: str = ""
    security: str = ""


@dataclass(slots=True, kw_only=True)
class CmdInstruction(Instruction):
    cmd_line: list[str]
    prepend_shell: bool


@dataclass(slots=True, kw_only=True)
class EntrypointInstruction(Instruction):
    cmd_line: list[str]
    prepend_shell: bool


@dataclass(slots=True, kw_only=True)
class CopyInstruction(Instruction):
    sources: list[str]
    dest: str
    heredocs: list[Heredoc] = field(default_factory=list)
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
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(slots=True, kw_only=True)
class OnbuildInstruction(Instruction):
    expression: str


# --- parsing ---------------------------------------------------------------------------


def _args(node: Node) -> list[str]:
    out = []
    n = node.next
    while n is not None:
        out.append(n.value)
        n = n.next
    return out


def _loc(node: Node, filename: str) -> Loc:
    keyword = node.value.upper()
    return Loc(filename=filename, start_line=node.start_line, end_line=node.end_line,
               keyword=keyword, text=node.original)


def parse_instruction(node: Node, filename: str) -> Instruction:
    loc = _loc(node, filename)
    keyword = loc.keyword
    parser = _PARSERS.get(keyword)
    if parser is None:
        hint = _did_you_mean(keyword, list(KNOWN_INSTRUCTIONS))
        msg = f"unknown instruction: {keyword}"
        if hint:
            msg += f" (did you mean {hint}?)"
        raise loc.error(msg)
    return parser(node, loc)


def _is_json(node: Node) -> bool:
    return bool(node.attributes.get("json"))


def _parse_from(node: Node, loc: Loc) -> FromInstruction:
    flags = Flags(node.flags, loc)
    platform = flags.string("platform")
    flags.finish()
    args = _args(node)
    if len(args) not in (1, 3):
        raise loc.error("FROM requires either one or three arguments")
    name = ""
    if len(args) == 3:
        if args[1].lower() != "as":
            raise loc.error("FROM requires either one or three arguments",
                            hint='use "FROM <image> AS <name>"')
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise loc.error(f"invalid name for build stage: {args[2]!r}, name can't start "
                            "with a number or contain symbols")
    return FromInstruction(loc=loc, image=args[0], name=name, platform=platform)


def _cmd_line(node: Node, loc: Loc) -> tuple[list[str], bool]:
    args = _args(node)
    if _is_json(node):
        return args, False
    return args, True


def _parse_run(node: Node, loc: Loc) -> RunInstruction:
    flags = Flags(node.flags, loc)
    mounts = flags.strings("mount")
    network = flags.string("network")
    security = flags.string("security")
    flags.strings("device")
    flags.finish()
    cmd, shell = _cmd_line(node, loc)
    if not cmd:
        raise loc.error("RUN requires at least one argument")
    return RunInstruction(loc=loc, cmd_line=cmd, prepend_shell=shell,
                          heredocs=list(node.heredocs), mounts=mounts, network=network,
                          security=security)


def _no_flags(node: Node, loc: Loc) -> None:
    Flags(node.flags, loc).finish()


def _parse_cmd(node: Node, loc: Loc) -> CmdInstruction:
    _no_flags(node, loc)
    cmd, shell = _cmd_line(node, loc)
    return CmdInstruction(loc=loc, cmd_line=cmd, prepend_shell=shell)


def _parse_entrypoint(node: Node, loc: Loc) -> EntrypointInstruction:
    _no_flags(node, loc)
    cmd, shell = _cmd_line(node, loc)
    return EntrypointInstruction(loc=loc, cmd_line=cmd, prepend_shell=shell)


def _sources_and_dest(node: Node, loc: Loc) -> tuple[list[str], str, list[Heredoc]]:
    args = _args(node)
    if len(args) < 2:
        raise loc.error(f"{loc.keyword} requires at least two arguments, but only one was "
                        "provided. Destination could not be determined")
    heredoc_names = {f"<<{h.name}" for h in node.heredocs}
    dest = args[-1]
    if node.heredocs and _heredoc_word(dest):
        raise loc.error(f"{loc.keyword} cannot accept a heredoc as a destination")
    sources = []
    heredocs = list(node.heredocs)
    for a in args[:-1]:
        if heredocs and _heredoc_word(a):
            continue
        sources.append(a)
    del heredoc_names
    return sources, dest, heredocs


_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")


def _heredoc_word(word: str) -> bool:
    return bool(_HEREDOC_WORD.match(word))


def _parse_copy(node: Node, loc: Loc) -> CopyInstruction:
    flags = Flags(node.flags, loc)
    from_ = flags.string("from")
    chown = flags.string("chown")
    chmod = flags.string("chmod")
    link = bool(flags.boolean("link"))
    parents = bool(flags.boolean("parents"))
    exclude = flags.strings("exclude")
    flags.finish()
    sources, dest, heredocs = _sources_and_dest(node, loc)
    return CopyInstruction(loc=loc, sources=sources, dest=dest, heredocs=heredocs, from_=from_,
                           chown=chown, chmod=chmod, link=link, parents=parents,
                           exclude=exclude)


def _parse_add(node: Node, loc: Loc) -> CopyInstruction:
    flags = Flags(node.flags, loc)
    chown = flags.string("chown")
    chmod = flags.string("chmod")
    link = bool(flags.boolean("link"))
    keep_git_dir = flags.boolean("keep-git-dir")
    checksum = flags.string("checksum")
    unpack = flags.boolean("unpack")
    exclude = flags.strings("exclude")
    flags.finish()
    sources, dest, heredocs = _sources_and_dest(node, loc)
    return CopyInstruction(loc=loc, sources=sources, dest=dest, heredocs=heredocs, chown=chown,
                           chmod=chmod, link=link, exclude=exclude, is_add=True,
                           checksum=checksum, keep_git_dir=keep_git_dir, unpack=unpack)


def _pairs(node: Node, loc: Loc) -> list[KeyValue]:
    args = _args(node)
    if not args:
        raise loc.error(f"{loc.keyword} requires at least one argument")
    if len(args) % 3:
        raise loc.error(f"bad input to {loc.keyword}, too many arguments")
    out = []
    for i in range(0, len(args), 3):
        key, value, sep = args[i], args[i + 1], args[i + 2]
        out.append(KeyValue(key=key, value=value, no_delim=sep == ""))
    return out


def _parse_env(node: Node, loc: Loc) -> EnvInstruction:
    _no_flags(node, loc)
    return EnvInstruction(loc=loc, pairs=_pairs(node, loc))


def _parse_label(node: Node, loc: Loc) -> LabelInstruction:
    _no_flags(node, loc)
    return LabelInstruction(loc=loc, pairs=_pairs(node, loc))


def _parse_arg(node: Node, loc: Loc) -> ArgInstruction:
    _no_flags(node, loc)
    args = _args(node)
    if not args:
        raise loc.error("ARG requires at least one argument")
    out = []
    for word in args:
        if "=" in word:
            key, _, value = word.partition("=")
            out.append(ArgDecl(key=key, value=value))
        else:
            out.append(ArgDecl(key=word, value=None))
        if not out[-1].key:
            raise loc.error(f"ARG names can not be blank: {word!r}")
    return ArgInstruction(loc=loc, args=out)


def _single(node: Node, loc: Loc, what: str) -> str:
    _no_flags(node, loc)
    args = _args(node)
    if len(args) != 1 or not args[0]:
        raise loc.error(f"{loc.keyword} requires exactly one argument",
                        hint=f"e.g. {loc.keyword} {what}")
    return args[0]


def _parse_workdir(node: Node, loc: Loc) -> WorkdirInstruction:
    return WorkdirInstruction(loc=loc, path=_single(node, loc, "/app"))


def _parse_user(node: Node, loc: Loc) -> UserInstruction:
    return UserInstruction(loc=loc, user=_single(node, loc, "app:app"))


def _parse_maintainer(node: Node, loc: Loc) -> MaintainerInstruction:
    return MaintainerInstruction(loc=loc, maintainer=_single(node, loc, "name"))


def _parse_stopsignal(node: Node, loc: Loc) -> StopSignalInstruction:
    # BuildKit never calls the flag parser for STOPSIGNAL: flags are ignored.
    args = _args(node)
    if len(args) != 1:
        raise loc.error("STOPSIGNAL requires exactly one argument")
    return StopSignalInstruction(loc=loc, signal=args[0])


def _parse_expose(node: Node, loc: Loc) -> ExposeInstruction:
    _no_flags(node, loc)
    args = _args(node)
    if not args:
        raise loc.error("EXPOSE requires at least one argument")
    return ExposeInstruction(loc=loc, ports=args)


def _parse_volume(node: Node, loc: Loc) -> VolumeInstruction:
    _no_flags(node, loc)
    args = _args(node)
    if not args:
        raise loc.error("VOLUME requires at least one argument")
    return VolumeInstruction(loc=loc, volumes=args)


def _parse_shell(node: Node, loc: Loc) -> ShellInstruction:
    _no_flags(node, loc)
    if not _is_json(node):
        raise loc.error("SHELL requires the arguments to be in JSON form",
                        hint='e.g. SHELL ["/bin/bash", "-c"]')
    args = _args(node)
    if not args:
        raise loc.error("SHELL requires at least one argument")
    return ShellInstruction(loc=loc, shell=args)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    if text in ("0", ""):
        return 0
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    pos = 0
    total = 0.0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if not m:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * round(total)


def _parse_healthcheck(node: Node, loc: Loc) -> HealthcheckInstruction:
    args = _args(node)
    if not args:
        raise loc.error("HEALTHCHECK requires an argument")
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1:
            raise loc.error("HEALTHCHECK NONE takes no arguments")
        return HealthcheckInstruction(loc=loc, test=["NONE"])
    if kind != "CMD":
        raise loc.error(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    flags = Flags(node.flags, loc)
    durations = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        raw = flags.string(name)
        try:
            ns = parse_go_duration(raw)
        except ValueError as exc:
            raise loc.error(str(exc)) from None
        if ns < 0 or 0 < ns < 1_000_000:
            raise loc.error(f"Interval {name} cannot be less than 1ms")
        durations[name] = ns
    retries_raw = flags.string("retries")
    flags.finish()
    try:
        retries = int(retries_raw) if retries_raw else 0
    except ValueError:
        raise loc.error(f"invalid --retries value {retries_raw!r}") from None
    if retries < 0:
        raise loc.error("--retries cannot be negative")
    cmd = args[1:]
    if not cmd:
        raise loc.error("Missing command after HEALTHCHECK CMD")
    test = ["CMD", *cmd] if _is_json(node) else ["CMD-SHELL", cmd[0]]
    return HealthcheckInstruction(
        loc=loc, test=test, interval=durations["interval"], timeout=durations["timeout"],
        start_period=durations["start-period"], start_interval=durations["start-interval"],
        retries=retries,
    )


_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _parse_onbuild(node: Node, loc: Loc) -> OnbuildInstruction:
    sub = node.next.children[0] if node.next is not None and node.next.children else None
    if sub is None:
        raise loc.error("ONBUILD requires at least one argument")
    trigger = sub.value.upper()
    if trigger == "ONBUILD":
        raise loc.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise loc.error(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", node.original, count=1)
    for h in sub.heredocs:
        expression += "\n" + h.content + h.name
    return OnbuildInstruction(loc=loc, expression=expression)


_PARSERS = {
    "FROM": _parse_from,
    "RUN": _parse_run,
    "CMD": _parse_cmd,
    "ENTRYPOINT": _parse_entrypoint,
    "COPY": _parse_copy,
    "ADD": _parse_add,
    "ENV": _parse_env,
    "LABEL": _parse_label,
    "ARG": _parse_arg,
    "WORKDIR": _parse_workdir,
    "USER": _parse_user,
    "MAINTAINER": _parse_maintainer,
    "STOPSIGNAL": _parse_stopsignal,
    "EXPOSE": _parse_expose,
    "VOLUME": _parse_volume,
    "SHELL": _parse_shell,
    "HEALTHCHECK": _parse_healthcheck,
    "ONBUILD": _parse_onbuild,
}


def json_or_none(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None

"""Checks on values and on the stage graph (BuildKit's `validations.go`): signals, modes,
digests, circular stage references, and the build checks that are not tied to one
instruction's dispatch."""

from __future__ import annotations

import re

from pybuild.errors import UserError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.lint import Linter
from pybuild.frontend.dockerfile2llb.state import DispatchState, fail
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import Loc

_SIGNALS = frozenset({
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
    "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
    "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    "RTMIN", "RTMAX", *(f"RTMIN+{i}" for i in range(1, 16)),
    *(f"RTMAX-{i}" for i in range(1, 15)),
})


def validate_signal(loc: Loc, sig: str) -> None:
    """moby/sys/signal.ParseSignal."""
    if re.fullmatch(r"[+-]?\d+", sig):
        if int(sig) == 0 or not -(2**63) <= int(sig) < 2**63:
            raise loc.error(f"invalid signal: {sig}", cls=UserError)
        return
    if sig.upper().removeprefix("SIG") not in _SIGNALS:
        raise loc.error(f"invalid signal: {sig}", cls=UserError,
                        hint="use a signal name such as SIGTERM, or a number")


_OCTAL_ERR = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"


def validate_chmod(loc: Loc, chmod: str) -> None:
    """convert_copy.go: octal 0..07777, else a symbolic mode (tonistiigi/dchapes-mode)."""
    if re.fullmatch(r"[0-7]+", chmod):
        if int(chmod, 8) > 0o7777:
            raise loc.error(_OCTAL_ERR.format(chmod), cls=UserError)
        return
    if chmod[:1].isdigit():
        raise loc.error(_OCTAL_ERR.format(chmod), cls=UserError)
    if not _symbolic_mode_ok(chmod):
        raise loc.error(f"invalid mode {chmod!r}: not an octal mode or a symbolic mode such as "
                        "u+x,g=rX", cls=UserError)


def _symbolic_mode_ok(s: str) -> bool:
    """The BSD setmode(3) grammar: [ugoa]*([-+=]([rwxXst]*|[ugo]))+ joined by commas."""
    for clause in s.split(","):
        i = 0
        while i < len(clause) and clause[i] in "ugoa":
            i += 1
        if i == len(clause) or clause[i] not in "+-=":
            return False
        while i < len(clause):
            if clause[i] not in "+-=":
                return False
            i += 1
            if i < len(clause) and clause[i] in "ugo":
                i += 1
                continue
            while i < len(clause) and clause[i] in "rwxXst":
                i += 1
    return True


_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def validate_digest(loc: Loc, text: str) -> None:
    """go-digest Parse + Validate."""
    algo, sep, hexpart = text.partition(":")
    if not sep or not algo or not hexpart or not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*",
                                                               algo):
        raise loc.error("invalid checksum digest format", cls=UserError,
                        hint="use --checksum=sha256:<64 hex digits>")
    if algo not in _DIGEST_LENGTHS:
        raise loc.error("unsupported digest algorithm", cls=UserError,
                        hint="use sha256, sha384 or sha512")
    if len(hexpart) != _DIGEST_LENGTHS[algo] or not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise loc.error("invalid checksum digest length", cls=UserError)


def has_wildcards(name: str) -> bool:
    """containsWildcards: `*`, `?` or `[` not escaped by a backslash."""
    i = 0
    while i < len(name):
        if name[i] in "*?[":
            return True
        if name[i] == "\\":
            i += 1
        i += 1
    return False


def check_cycles(states: list[DispatchState]) -> None:
    """validateCircularDependency."""
    visited: set[int] = set()
    path: set[int] = set()

    def visit(s: DispatchState, current: list[ins.Instruction]) -> list[ins.Instruction] | None:
        if id(s) in visited:
            return None
        visited.add(id(s))
        path.add(id(s))
        for dep, inst in s.deps:
            nxt = [*current, inst]
            if id(dep) in path:
                return nxt
            found = visit(dep, nxt)
            if found is not None:
                return found
        path.discard(id(s))
        return None

    for s in states:
        cmds = visit(s, [])
        if cmds is not None:
            raise fail(cmds[-1].loc, f"circular dependency detected on stage: {s.stage_name}",
                       hint="a stage cannot (indirectly) copy or mount from itself")


def lint_stages(lint: Linter,
                stages: list[tuple[ins.FromInstruction, list[ins.Instruction]]]) -> None:
    """validateCommandCasing, validateStageNames and the FROM casing checks."""
    seen: set[str] = set()
    lower = upper = 0
    names = []
    for from_, commands in stages:
        names.append((from_.name, from_.loc))
        names.extend((c.name, c.loc) for c in commands)
    for n, _ in names:
        if n == n.lower():
            lower += 1
        elif n == n.upper():
            upper += 1
    majority_lower = lower > upper
    for n, loc in names:
        want = n.lower() if majority_lower else n.upper()
        if n != want:
            lint.run(rules.CONSISTENT_INSTRUCTION_CASING, loc, n,
                     "lowercase" if majority_lower else "uppercase")
    for from_, _ in stages:
        loc = from_.loc
        if from_.as_word:
            words = loc.text.split()
            name_raw = words[-1] if words else from_.stage_name
            if name_raw != name_raw.lower():
                lint.run(rules.STAGE_NAME_CASING, loc, name_raw)
            kw, as_ = from_.name, from_.as_word
            if kw in (kw.lower(), kw.upper()):
                want = as_.lower() if kw == kw.lower() else as_.upper()
                if as_ != want:
                    lint.run(rules.FROM_AS_CASING, loc, kw, as_)
        name = from_.stage_name
        if not name:
            continue
        if name in ("context", "scratch"):
            lint.run(rules.RESERVED_STAGE_NAME, loc, name)
        if name in seen:
            lint.run(rules.DUPLICATE_STAGE_NAME, loc, name)
        seen.add(name)


_SECRET_DENY = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|"
                          r"pword|passwd|secret|token)(?:_|$)")
_SECRET_ALLOW = re.compile(r"(?i)(?:_|^)(?:public)(?:_|$)")


def lint_secret_key(lint: Linter, what: str, key: str, loc: Loc) -> None:
    """validateNoSecretKey."""
    if _SECRET_DENY.search(key) and not _SECRET_ALLOW.search(key):
        lint.run(rules.SECRETS_USED_IN_ARG_OR_ENV, loc, what, key)


def track_once(lint: Linter, d: DispatchState, what: str, inst: ins.Instruction) -> None:
    """validateUsedOnce: a second CMD/ENTRYPOINT/HEALTHCHECK warns at the first one."""
    prev = d.trackers.get(what)
    if prev is not None:
        lint.run(rules.MULTIPLE_INSTRUCTIONS_DISALLOWED, prev, inst.keyword)
    d.trackers[what] = inst.loc

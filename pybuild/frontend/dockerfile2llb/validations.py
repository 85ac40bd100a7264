"""Checks on values and on the stage graph (BuildKit's `validations.go`): signals, modes,
digests, circular stage references, and the build checks that are not tied to one
instruction's dispatch."""

from __future__ import annotations

import re

from pybuild.errors import PybuildError, UserError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.args import NON_ENV_ARGS
from pybuild.frontend.dockerfile2llb.lint import Linter
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState, EnvList, fail
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.shell.lex import ShellLex
from pybuild.frontend.suggest import suggest
from pybuild.gocompat import clean_path
from pybuild.oci.platform import Platform

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


def lint_parsed(lint: Linter, inst: ins.Instruction) -> None:
    """The checks BuildKit runs while parsing each instruction (so also in stages that are
    never built): stage name and `AS` casing, MAINTAINER, definition comments."""
    lint = lint.for_comments(inst.comments)
    match inst:
        case ins.FromInstruction(as_word=as_word) if as_word:
            words = inst.loc.text.split()
            name_raw = words[-1] if words else inst.stage_name
            if name_raw != name_raw.lower():
                lint.run(rules.STAGE_NAME_CASING, inst.loc, name_raw)
            kw = inst.name
            if kw in (kw.lower(), kw.upper()):
                want = as_word.lower() if kw == kw.lower() else as_word.upper()
                if as_word != want:
                    lint.run(rules.FROM_AS_CASING, inst.loc, kw, as_word)
            _definition_description(lint, "FROM", [inst.stage_name], inst)
        case ins.MaintainerInstruction():
            lint.run(rules.MAINTAINER_DEPRECATED, inst.loc)
        case ins.ArgInstruction():
            _definition_description(lint, "ARG", [a.key for a in inst.args], inst)
        case _:
            pass


def _definition_description(lint: Linter, what: str, keys: list[str],
                            inst: ins.Instruction) -> None:
    """validateDefinitionDescription: a comment right above FROM … AS name / ARG name
    should start with that name."""
    if not inst.comments or not keys:
        return
    if inst.comments[-1].split(" ")[0] in keys:
        return
    lint.run(rules.INVALID_DEFINITION_DESCRIPTION, inst.loc, what,
             keys[0] if len(keys) == 1 else "<arg_key>")


def lint_stages(lint: Linter,
                stages: list[tuple[ins.FromInstruction, list[ins.Instruction]]]) -> None:
    """validateStageNames, then validateCommandCasing."""
    seen: set[str] = set()
    for from_, _ in stages:
        name = from_.stage_name
        if not name:
            continue
        if name in ("context", "scratch"):
            lint.run(rules.RESERVED_STAGE_NAME, from_.loc, name)
        if name in seen:
            lint.run(rules.DUPLICATE_STAGE_NAME, from_.loc, name)
        seen.add(name)
    names = []
    for from_, commands in stages:
        names.append((from_.name, from_.loc))
        names.extend((c.name, c.loc) for c in commands)
    lower = sum(1 for n, _ in names if n == n.lower())
    upper = sum(1 for n, _ in names if n != n.lower() and n == n.upper())
    majority_lower = lower > upper
    for n, loc in names:
        want = n.lower() if majority_lower else n.upper()
        if n != want:
            lint.run(rules.CONSISTENT_INSTRUCTION_CASING, loc, n,
                     "lowercase" if majority_lower else "uppercase")


def report_unmatched(ctx: DispatchContext, d: DispatchState, inst: ins.Instruction,
                     unmatched: set[str], env: EnvList) -> None:
    """reportUnmatchedVariables: UndefinedVar for each name an expansion did not find,
    unless the stage declared it with ARG (possibly without a value)."""
    if not unmatched:
        return
    declared = {k for k, _ in d.build_args}
    lint = ctx.lint_for(inst)
    for name in sorted(unmatched - declared - NON_ENV_ARGS):
        lint.run(rules.UNDEFINED_VAR, inst.loc, name, suggest(name, env.items) or "")


def expand_reported(ctx: DispatchContext, d: DispatchState, inst: ins.Instruction, word: str,
                    env: EnvList, lex: ShellLex | None = None) -> str:
    """One word of an instruction expanded with the stage's environment; names it uses
    that are not defined are reported (UndefinedVar)."""
    try:
        result, _, unmatched = (lex or ctx.lex).process_word_with_matches(word, env.items)
    except PybuildError as exc:
        raise fail(inst.loc, exc.message) from None
    report_unmatched(ctx, d, inst, unmatched, env)
    return result


def report_from_args(lint: Linter, known: set[str], unmatched: set[str], loc: Loc) -> None:
    """reportUnusedFromArgs: UndefinedArgInFrom for names no ARG declares."""
    for name in sorted(unmatched - known):
        lint.run(rules.UNDEFINED_ARG_IN_FROM, loc, name, suggest(name, sorted(known)) or "")


def report_platform_flag(lint: Linter, stage_name: str, raw: str, result: str,
                         matched: set[str], unmatched: set[str], global_args: EnvList,
                         loc: Loc) -> None:
    """reportRedundantTargetPlatform and reportConstPlatformDisallowed."""
    if matched == {"TARGETPLATFORM"} and not unmatched \
            and result == global_args.get("TARGETPLATFORM"):
        lint.run(rules.REDUNDANT_TARGET_PLATFORM, loc, raw)
    if matched or unmatched:
        return
    try:
        p = Platform.parse(result)
    except UserError:
        return  # it fails later, with an error
    if p.os in stage_name or p.architecture in stage_name:
        return
    lint.run(rules.FROM_PLATFORM_FLAG_CONST_DISALLOWED, loc, result)


def validate_base_image_platform(lint: Linter, name: str, expected: Platform,
                                 actual: Platform, loc: Loc) -> None:
    """validateBaseImagePlatform: only OS and architecture are compared."""
    from pybuild.frontend.dockerfile2llb.history import format_platform_all

    if expected.os != actual.os or expected.architecture != actual.architecture:
        lint.run(rules.INVALID_BASE_IMAGE_PLATFORM, loc, name, format_platform_all(expected),
                 format_platform_all(actual))


def validate_copy_source(ctx: DispatchContext, inst: ins.CopyInstruction, src: str) -> None:
    """validateCopySourcePath: CopyIgnoredFile when .dockerignore excludes a source. Not
    checked when the patterns have exceptions (`!…`): too hard to decide statically."""
    matcher = ctx.ignore
    if matcher is None or matcher.exclusions:
        return
    path = clean_path(src)
    if path in (".", "/") and not any(p in ("*", "**", "**/*") for p in matcher.patterns):
        return
    if matcher.matches_or_parent_matches(path):
        ctx.lint_for(inst).run(rules.COPY_IGNORED_FILE, inst.loc,
                               "Add" if inst.is_add else "Copy", path)


_SECRET_DENY = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|"
                          r"pword|passwd|secret|token)(?:_|$)")
_SECRET_ALLOW = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")


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

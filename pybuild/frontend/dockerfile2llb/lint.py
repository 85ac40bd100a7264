"""Build checks as data (BuildKit's `linter/ruleset.go` and `linter/linter.go`).

Each rule is a value: name, description, documentation URL and a message format. The
`Linter` decides whether a rule runs (`# check=skip=…`, the BUILDKIT_DOCKERFILE_CHECK
build arg) and collects typed `BuildWarning`s; with `error=true` any warning fails the
build at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pybuild.errors import SourceLocation, UserError
from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.results import BuildWarning, SourceRange

_DOCS = "https://docs.docker.com/go/dockerfile/rule/"


@dataclass(frozen=True, slots=True, kw_only=True)
class LintRule:
    name: str
    description: str
    url: str
    format: Callable[..., str]
    experimental: bool = False
    deprecated: bool = False


def _rule(name: str, slug: str, description: str, fmt: Callable[..., str],
          **kw: bool) -> LintRule:
    return LintRule(name=name, description=description, url=_DOCS + slug + "/" if slug else "",
                    format=fmt, **kw)


STAGE_NAME_CASING = _rule(
    "StageNameCasing", "stage-name-casing", "Stage names should be lowercase",
    lambda name: f"Stage name '{name}' should be lowercase")
FROM_AS_CASING = _rule(
    "FromAsCasing", "from-as-casing",
    "The 'as' keyword should match the case of the 'from' keyword",
    lambda from_, as_: f"'{as_}' and '{from_}' keywords' casing do not match")
NO_EMPTY_CONTINUATION = _rule(
    "NoEmptyContinuation", "no-empty-continuation",
    "Empty continuation lines will become errors in a future release",
    lambda: "Empty continuation line")
CONSISTENT_INSTRUCTION_CASING = _rule(
    "ConsistentInstructionCasing", "consistent-instruction-casing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    lambda cmd, casing: f"Command '{cmd}' should match the case of the command majority "
                        f"({casing})")
DUPLICATE_STAGE_NAME = _rule(
    "DuplicateStageName", "duplicate-stage-name", "Stage names should be unique",
    lambda name: f"Duplicate stage name '{name}', stage names should be unique")
RESERVED_STAGE_NAME = _rule(
    "ReservedStageName", "reserved-stage-name",
    "Reserved words should not be used as stage names",
    lambda name: f"'{name}' is reserved and should not be used as a stage name")
JSON_ARGS_RECOMMENDED = _rule(
    "JSONArgsRecommended", "json-args-recommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related "
    "to OS signals",
    lambda inst: f"JSON arguments recommended for {inst} to prevent unintended behavior "
                 "related to OS signals")
MAINTAINER_DEPRECATED = _rule(
    "MaintainerDeprecated", "maintainer-deprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    lambda: "Maintainer instruction is deprecated in favor of using label")
WORKDIR_RELATIVE_PATH = _rule(
    "WorkdirRelativePath", "workdir-relative-path",
    "Relative workdir without an absolute workdir declared within the build can have "
    "unexpected results if the base image changes",
    lambda wd: f"Relative workdir {wd!r} can have unexpected results if the base image "
               "changes")
MULTIPLE_INSTRUCTIONS_DISALLOWED = _rule(
    "MultipleInstructionsDisallowed", "multiple-instructions-disallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    lambda inst: f"Multiple {inst} instructions should not be used in the same stage because "
                 "only the last one will be used")
LEGACY_KEY_VALUE_FORMAT = _rule(
    "LegacyKeyValueFormat", "legacy-key-value-format",
    "Legacy key/value format with whitespace separator should not be used",
    lambda cmd: f'"{cmd} key=value" should be used instead of legacy "{cmd} key value" format')
SECRETS_USED_IN_ARG_OR_ENV = _rule(
    "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env",
    "Sensitive data should not be used in the ARG or ENV commands",
    lambda inst, key: f'Do not use ARG or ENV instructions for sensitive data ({inst} "{key}")')
EXPOSE_PROTO_CASING = _rule(
    "ExposeProtoCasing", "expose-proto-casing",
    "Protocol in EXPOSE instruction should be lowercase",
    lambda port: f"Defined protocol '{port}' in EXPOSE instruction should be lowercase")

RULES: tuple[LintRule, ...] = (
    STAGE_NAME_CASING, FROM_AS_CASING, NO_EMPTY_CONTINUATION, CONSISTENT_INSTRUCTION_CASING,
    DUPLICATE_STAGE_NAME, RESERVED_STAGE_NAME, JSON_ARGS_RECOMMENDED, MAINTAINER_DEPRECATED,
    WORKDIR_RELATIVE_PATH, MULTIPLE_INSTRUCTIONS_DISALLOWED, LEGACY_KEY_VALUE_FORMAT,
    EXPOSE_PROTO_CASING, SECRETS_USED_IN_ARG_OR_ENV,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LintConfig:
    """A parsed `# check=` value."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False


def parse_check(spec: str | None) -> LintConfig:
    skip: set[str] = set()
    skip_all = error = False
    for part in (spec or "").split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq:
            raise UserError(f"failed to parse check options: invalid check option {part!r}")
        if key == "skip":
            for rule in value.split(","):
                rule = rule.strip()
                if rule.lower() == "all":
                    skip_all = True
                elif rule:
                    skip.add(rule)
        elif key == "error":
            v = value.strip().lower()
            if v not in ("true", "false", "1", "0", "t", "f"):
                raise UserError(f"failed to parse check options: invalid error value "
                                f"{value!r}")
            error = v in ("true", "1", "t")
        elif key == "experimental":
            continue
        else:
            raise UserError(f"failed to parse check options: unknown option {key!r}")
    return LintConfig(skip=frozenset(skip), skip_all=skip_all, error=error)


@dataclass(slots=True, kw_only=True)
class Linter:
    config: LintConfig
    filename: str
    found: list[BuildWarning] = field(default_factory=list)

    def run(self, rule: LintRule, loc: Loc | int, *args: str) -> None:
        if rule.deprecated or self.config.skip_all or rule.name in self.config.skip:
            return
        start, end = (loc, loc) if isinstance(loc, int) else (loc.start_line, loc.end_line)
        self.found.append(BuildWarning(
            rule=rule.name, message=rule.format(*args), description=rule.description,
            url=rule.url, filename=self.filename,
            ranges=(SourceRange(start_line=start, end_line=end),)))

    def check(self) -> None:
        """`error=true`: any warning fails the build (BuildKit's `Linter.Error`)."""
        if not (self.config.error and self.found):
            return
        rules: list[str] = []
        for w in self.found:
            if w.rule not in rules:
                rules.append(w.rule)
        first = self.found[0]
        raise UserError(f"lint violation found for rules: {', '.join(rules)}", code="lint",
                        location=SourceLocation(self.filename, first.line, first.line),
                        hint=first.message)

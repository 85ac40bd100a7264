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
from pybuild.gocompat import go_parse_bool, go_quote

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
    lambda name: f"Duplicate stage name {go_quote(name)}, stage names should be unique")
RESERVED_STAGE_NAME = _rule(
    "ReservedStageName", "reserved-stage-name",
    "Reserved words should not be used as stage names",
    lambda name: f"Stage name should not use the same name as reserved stage {go_quote(name)}")
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
UNDEFINED_ARG_IN_FROM = _rule(
    "UndefinedArgInFrom", "undefined-arg-in-from", "FROM command must use declared ARGs",
    lambda arg, suggest: f"FROM argument '{arg}' is not declared"
                         + (f" (did you mean {suggest}?)" if suggest else ""))
WORKDIR_RELATIVE_PATH = _rule(
    "WorkdirRelativePath", "workdir-relative-path",
    "Relative workdir without an absolute workdir declared within the build can have "
    "unexpected results if the base image changes",
    lambda wd: f"Relative workdir {go_quote(wd)} can have unexpected results if the base "
               "image changes")
UNDEFINED_VAR = _rule(
    "UndefinedVar", "undefined-var", "Variables should be defined before their use",
    lambda arg, suggest: f"Usage of undefined variable '${arg}'"
                         + (f" (did you mean ${suggest}?)" if suggest else ""))
MULTIPLE_INSTRUCTIONS_DISALLOWED = _rule(
    "MultipleInstructionsDisallowed", "multiple-instructions-disallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    lambda inst: f"Multiple {inst} instructions should not be used in the same stage because "
                 "only the last one will be used")
LEGACY_KEY_VALUE_FORMAT = _rule(
    "LegacyKeyValueFormat", "legacy-key-value-format",
    "Legacy key/value format with whitespace separator should not be used",
    lambda cmd: f'"{cmd} key=value" should be used instead of legacy "{cmd} key value" format')
# BuildKit gives this rule no documentation page (and so no URL).
INVALID_BASE_IMAGE_PLATFORM = _rule(
    "InvalidBaseImagePlatform", "",
    "Base image platform does not match expected target platform",
    lambda image, expected, actual: f"Base image {image} was pulled with platform "
                                    f"{go_quote(actual)}, expected {go_quote(expected)} for "
                                    "current build")
REDUNDANT_TARGET_PLATFORM = _rule(
    "RedundantTargetPlatform", "redundant-target-platform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the "
    "default behavior",
    lambda var: f"Setting platform to predefined {var} in FROM is redundant as this is the "
                "default behavior")
SECRETS_USED_IN_ARG_OR_ENV = _rule(
    "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env",
    "Sensitive data should not be used in the ARG or ENV commands",
    lambda inst, key: f"Do not use ARG or ENV instructions for sensitive data "
                      f"({inst} {go_quote(key)})")
INVALID_DEFAULT_ARG_IN_FROM = _rule(
    "InvalidDefaultArgInFrom", "invalid-default-arg-in-from",
    "Default value for global ARG results in an empty or invalid base image name",
    lambda base: f"Default value for ARG {base} results in empty or invalid base image name")
FROM_PLATFORM_FLAG_CONST_DISALLOWED = _rule(
    "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed",
    "FROM --platform flag should not use a constant value",
    lambda platform: f"FROM --platform flag should not use constant value {go_quote(platform)}")
COPY_IGNORED_FILE = _rule(
    "CopyIgnoredFile", "copy-ignored-file",
    "Attempting to Copy file that is excluded by .dockerignore",
    lambda cmd, path: f"Attempting to {cmd} file {go_quote(path)} that is excluded by "
                      ".dockerignore")
INVALID_DEFINITION_DESCRIPTION = _rule(
    "InvalidDefinitionDescription", "invalid-definition-description",
    "Comment for build stage or argument should follow the format: `# <arg/stage name> "
    "<description>`. If this is not intended to be a description comment, add an empty line "
    "or comment between the instruction and the comment.",
    lambda inst, name: f"Comment for {inst} should follow the format: `# {name} <description>`",
    experimental=True)
EXPOSE_PROTO_CASING = _rule(
    "ExposeProtoCasing", "expose-proto-casing",
    "Protocol in EXPOSE instruction should be lowercase",
    lambda port: f"Defined protocol '{port}' in EXPOSE instruction should be lowercase")
EXPOSE_INVALID_FORMAT = _rule(
    "ExposeInvalidFormat", "expose-invalid-format",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will "
    "become an error in a future release",
    lambda port: f"EXPOSE instruction should not define an IP address or host-port mapping, "
                 f"found '{port}'")

# In BuildKit's ruleset.go order.
RULES: tuple[LintRule, ...] = (
    STAGE_NAME_CASING, FROM_AS_CASING, NO_EMPTY_CONTINUATION, CONSISTENT_INSTRUCTION_CASING,
    DUPLICATE_STAGE_NAME, RESERVED_STAGE_NAME, JSON_ARGS_RECOMMENDED, MAINTAINER_DEPRECATED,
    UNDEFINED_ARG_IN_FROM, WORKDIR_RELATIVE_PATH, UNDEFINED_VAR,
    MULTIPLE_INSTRUCTIONS_DISALLOWED, LEGACY_KEY_VALUE_FORMAT, INVALID_BASE_IMAGE_PLATFORM,
    REDUNDANT_TARGET_PLATFORM, SECRETS_USED_IN_ARG_OR_ENV, INVALID_DEFAULT_ARG_IN_FROM,
    FROM_PLATFORM_FLAG_CONST_DISALLOWED, COPY_IGNORED_FILE, INVALID_DEFINITION_DESCRIPTION,
    EXPOSE_PROTO_CASING, EXPOSE_INVALID_FORMAT,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LintConfig:
    """A parsed `# check=` value (BuildKit's `linter.Config`)."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False
    error: bool = False

    def merged(self, other: LintConfig) -> LintConfig:
        """WithMergedConfig: skips and experiments add up; `error` stays the file's."""
        return LintConfig(skip=self.skip | other.skip, skip_all=self.skip_all or other.skip_all,
                          experimental=self.experimental | other.experimental,
                          experimental_all=self.experimental_all or other.experimental_all,
                          error=self.error)


def parse_check(spec: str) -> LintConfig:
    """BuildKit's `linter.ParseLintOptions`: `skip=<rules|all>;experimental=…;error=<bool>`.
    Raises ValueError with BuildKit's message."""
    spec = spec.strip()
    if not spec:
        return LintConfig()
    skip: frozenset[str] = frozenset()
    experimental: frozenset[str] = frozenset()
    skip_all = experimental_all = error = False
    for part in spec.split(";", 2):  # strings.SplitN(checkStr, ";", 3)
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"invalid check option {go_quote(part)}")
        key = key.strip()
        if key == "skip":
            value = value.strip()
            if value == "all":
                skip_all = True
            else:
                skip = frozenset(r.strip() for r in value.split(","))
        elif key == "experimental":
            value = value.strip()
            if value == "all":
                experimental_all = True
            else:
                experimental = frozenset(r.strip() for r in value.split(","))
        elif key == "error":
            try:
                error = go_parse_bool(value.strip())
            except ValueError as exc:
                raise ValueError(f"failed to parse check option {go_quote(part)}: {exc}"
                                 ) from None
        else:
            raise ValueError(f"invalid check option {go_quote(key)}")
    return LintConfig(skip=skip, skip_all=skip_all, experimental=experimental,
                      experimental_all=experimental_all, error=error)


def _comment_check(comments: tuple[str, ...]) -> LintConfig | None:
    """The first `# check=…` comment right above an instruction (its value up to the first
    space, so `# check=skip=X // why` works); None if there is none or it does not parse."""
    from pybuild.frontend.dockerfile.directives import DirectiveError, DirectiveParser

    for comment in comments:
        try:
            found = DirectiveParser(comment="").parse_line(comment)
        except DirectiveError:
            continue
        if found is None or found[0] != "check":
            continue
        try:
            return parse_check(found[1].split(" ", 1)[0])
        except ValueError:
            return None
    return None


@dataclass(slots=True, kw_only=True)
class Linter:
    """Runs rules under a config and collects their warnings. `for_comments` gives the
    linter of one instruction (its `# check=` comment merged in), sharing the findings."""

    config: LintConfig
    filename: str
    found: list[BuildWarning] = field(default_factory=list)

    def for_comments(self, comments: tuple[str, ...]) -> Linter:
        extra = _comment_check(comments) if comments else None
        if extra is None:
            return self
        return Linter(config=self.config.merged(extra), filename=self.filename,
                      found=self.found)

    def enabled(self, rule: LintRule) -> bool:
        if rule.deprecated:
            return False
        if rule.experimental:
            return self.config.experimental_all or rule.name in self.config.experimental
        return not (self.config.skip_all or rule.name in self.config.skip)

    def run(self, rule: LintRule, loc: Loc | int, *args: str) -> None:
        if not self.enabled(rule):
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

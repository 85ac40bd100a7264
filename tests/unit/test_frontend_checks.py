"""Build checks: each rule as current BuildKit's dockerfile_check_test.go expects it.

`built` is what a build reports (the target's stages, like the progress stream); `checked`
is what `--call=check` reports (every stage, BuildKit's lint subrequest).
"""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.convert import lint as lint_dockerfile
from pybuild.frontend.dockerfile2llb.options import FrontendOptions
from pybuild.frontend.results import BuildWarning


def _key(w: BuildWarning) -> tuple[int, str]:
    return (w.line, w.message)


def built(fe, df: str, **opts) -> list[tuple[str, str, int]]:
    r = fe.compile(df, **opts)
    return [(w.rule, w.message, w.line) for w in sorted(
        (w for w in r.warnings if w.rule), key=_key)]


def checked(fe, df: str, **opts) -> list[tuple[str, str, int]]:
    from tests.unit.conftest import AMD64

    build_args = tuple(opts.pop("build_args", {}).items())
    report = lint_dockerfile(FrontendOptions(dockerfile=df.encode(), platform=AMD64,
                                             build_platform=AMD64, build_args=build_args,
                                             **opts), fe.resolver)
    assert report.error is None, report.error
    return [(w.rule, w.message, w.line) for w in sorted(report.warnings, key=_key)]


def test_every_rule_is_data_with_buildkit_docs() -> None:
    names = [r.name for r in rules.RULES]
    assert len(names) == len(set(names)) == 22
    # the pages of BuildKit's frontend/dockerfile/docs/rules/ (InvalidBaseImagePlatform has none)
    docs = {"consistent-instruction-casing", "copy-ignored-file", "duplicate-stage-name",
            "expose-invalid-format", "expose-proto-casing", "from-as-casing",
            "from-platform-flag-const-disallowed", "invalid-default-arg-in-from",
            "invalid-definition-description", "json-args-recommended",
            "legacy-key-value-format", "maintainer-deprecated",
            "multiple-instructions-disallowed", "no-empty-continuation",
            "redundant-target-platform", "reserved-stage-name", "secrets-used-in-arg-or-env",
            "stage-name-casing", "undefined-arg-in-from", "undefined-var",
            "workdir-relative-path"}
    urls = {r.url for r in rules.RULES if r.name != "InvalidBaseImagePlatform"}
    assert urls == {f"https://docs.docker.com/go/dockerfile/rule/{d}/" for d in docs}
    assert all(r.description for r in rules.RULES)


def test_stage_name(fe) -> None:
    """testStageName."""
    df = ("\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n"
          "# warning: 'as' should match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\n"
          "FROM scratch AS base3\n")
    expected = [("StageNameCasing", "Stage name 'BadStageName' should be lowercase", 4),
                ("FromAsCasing", "'as' and 'FROM' keywords' casing do not match", 8)]
    assert built(fe, df) == expected
    assert checked(fe, df) == expected
    df = "\nfrom scratch AS base\n\nfrom scratch as base2\n"
    assert built(fe, df) == [("FromAsCasing", "'AS' and 'from' keywords' casing do not match",
                              2)]


def test_no_empty_continuation(fe) -> None:
    df = "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\n"
    assert built(fe, df) == [("NoEmptyContinuation", "Empty continuation line", 6)]


@pytest.mark.parametrize(("df", "expected"), [
    ("\nFrom scratch as base\nFROM scratch AS base2\n",
     "Command 'From' should match the case of the command majority (uppercase)"),
    ("\nFROM scratch\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n",
     "Command 'copy' should match the case of the command majority (uppercase)"),
    ("\nfrOM scratch as base\nfrom scratch as base2\n",
     "Command 'frOM' should match the case of the command majority (lowercase)"),
    ("\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n",
     "Command 'FROM' should match the case of the command majority (lowercase)"),
])
def test_consistent_instruction_casing(fe, df: str, expected: str) -> None:
    line = 2 if not df.startswith("\nFROM scratch\ncopy Dockerfile /foo\nCOPY") else 3
    assert built(fe, df) == [("ConsistentInstructionCasing", expected, line)]


def test_duplicate_and_reserved_stage_names(fe) -> None:
    assert built(fe, "\nFROM scratch AS b\nFROM scratch AS b\n") == [
        ("DuplicateStageName", 'Duplicate stage name "b", stage names should be unique', 3)]
    assert built(fe, "\nFROM scratch AS scratch\nFROM scratch AS context\n") == [
        ("ReservedStageName", 'Stage name should not use the same name as reserved stage '
                              '"scratch"', 2),
        ("ReservedStageName", 'Stage name should not use the same name as reserved stage '
                              '"context"', 3)]
    assert built(fe, "\nFROM scratch\nFROM scratch AS a\n") == []


def test_json_args_recommended(fe) -> None:
    assert built(fe, "FROM scratch\nCMD mycommand\n") == [
        ("JSONArgsRecommended", "JSON arguments recommended for CMD to prevent unintended "
                                "behavior related to OS signals", 2)]
    assert built(fe, 'FROM scratch\nSHELL ["/usr/bin/customshell"]\nENTRYPOINT my\n') == []
    assert built(fe, 'FROM scratch AS base\nSHELL ["/bin/x"]\n\nFROM base\nCMD my\n') == []


def test_per_instruction_check_comments(fe) -> None:
    """testMaintainerDeprecated: `# check=skip=…` right above an instruction applies to it."""
    assert built(fe, "FROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n") == []
    assert built(fe, "FROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER me\n") == []
    assert built(fe, "FROM scratch\nMAINTAINER me@example.org\n") == [
        ("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using "
                                 "label", 2)]


def test_secrets_used_in_arg_or_env(fe) -> None:
    """testSecretsUsedInArgOrEnv, verbatim."""
    df = ("# check=skip=InvalidDefinitionDescription\n\nFROM scratch\nARG SECRET_PASSPHRASE\n"
          "ENV SUPER_Secret=foo\nENV password=bar secret=baz\n"
          "ARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\n"
          "ENV git_key=\nENV PUBLIC_KEY=\nARG public_token\nARG SECRET_PASSPHRASE_FILE\n"
          "ENV password_file=bar secret_File=baz\nARG AUTH_MODULE_VERSION\n"
          "# check=skip=SecretsUsedInArgOrEnv // allow secret in environment\n"
          "ENV password=bar\n# check=skip=SecretsUsedInArgOrEnv // allow secret in arg\n"
          "ARG password\n# check=skip=all // is local to only this instruction\n"
          "ENV alternate_password=bar\n# check=skip=all // is local to only this instruction\n"
          "ARG alternate_password\n")
    got = built(fe, df)
    msg = "Do not use ARG or ENV instructions for sensitive data ({} \"{}\")"
    assert got == [("SecretsUsedInArgOrEnv", msg.format(k, n), line) for k, n, line in [
        ("ARG", "SECRET_PASSPHRASE", 4), ("ENV", "SUPER_Secret", 5), ("ENV", "password", 6),
        ("ENV", "secret", 6), ("ARG", "auth", 7), ("ARG", "super_duper_secret_token", 7),
        ("ENV", "apikey", 8), ("ENV", "git_key", 9)]]


def test_rule_check_option(fe) -> None:
    """testRuleCheckOption: skip lists, error=true, and the BUILDKIT_DOCKERFILE_CHECK arg,
    which replaces the directive."""
    body = "FROM scratch as base\ncopy Dockerfile .\n"
    assert built(fe, "#check=skip=all\n" + body) == []
    fe.compile("#check=skip=all;error=true\n" + body)
    fe.compile("#check=skip=ConsistentInstructionCasing,FromAsCasing;error=true\n" + body)
    assert built(fe, "#check=skip=ConsistentInstructionCasing\n" + body) == [
        ("FromAsCasing", "'as' and 'FROM' keywords' casing do not match", 2)]
    with pytest.raises(UserError) as e:
        fe.compile("#check=skip=ConsistentInstructionCasing;error=true\n" + body)
    assert e.value.message == "lint violation found for rules: FromAsCasing"
    assert e.value.location is not None and e.value.location.start_line == 2
    with pytest.raises(UserError, match="lint violation found for rules: FromAsCasing"):
        fe.compile("#check=skip=all\n" + body, build_args={
            "BUILDKIT_DOCKERFILE_CHECK": "skip=ConsistentInstructionCasing;error=true"})
    fe.compile("#check=error=true\n" + body, build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=all"})


@pytest.mark.parametrize(("spec", "message"), [
    ("skip", 'failed to parse check options: invalid check option "skip"'),
    ("nope=1", 'failed to parse check options: invalid check option "nope"'),
    ("error=maybe", 'failed to parse check options: failed to parse check option "error=maybe": '
                    'strconv.ParseBool: parsing "maybe": invalid syntax'),
    ("skip=all;", 'failed to parse check options: invalid check option ""'),
])
def test_bad_check_directive(fe, spec: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        fe.compile(f"# check={spec}\nFROM scratch\n")
    assert e.value.message == message


def test_bad_check_build_arg_is_named(fe) -> None:
    with pytest.raises(UserError, match="failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK"):
        fe.compile("FROM scratch\n", build_args={"BUILDKIT_DOCKERFILE_CHECK": "x"})


def test_undeclared_arg_in_from(fe) -> None:
    """testUndeclaredArg."""
    for df in ("\nARG base=scratch\nFROM $base\n",
               "\nARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\n",
               "\nFROM --platform=$BUILDPLATFORM scratch\n",
               "\nARG DEBUG\nFROM scratch${DEBUG}\n", "\nARG DEBUG\nFROM scra${DEBUG:-tch}\n"):
        assert built(fe, df) == [], df
    with pytest.raises(UserError) as e:
        fe.compile("\nFROM --platform=$BULIDPLATFORM scratch\n")
    assert e.value.message == ("empty platform value from expression $BULIDPLATFORM (did you "
                               "mean BUILDPLATFORM?)")
    assert built(fe, "\nARG tag=latest\nFROM busybox:${tag}${version} AS b\n") == [
        ("UndefinedArgInFrom", "FROM argument 'version' is not declared", 3)]


def test_undeclared_arg_in_from_is_reported_before_the_error(fe) -> None:
    report = lint_dockerfile(FrontendOptions(dockerfile=b"\nFROM --platform=$BULIDPLATFORM "
                                                        b"scratch\n"), fe.resolver)
    assert [(w.rule, w.message) for w in report.warnings] == [
        ("UndefinedArgInFrom", "FROM argument 'BULIDPLATFORM' is not declared (did you mean "
                               "BUILDPLATFORM?)")]
    assert report.error is not None and report.error.location is not None
    assert report.error.location.start_line == 2


def test_unmatched_vars(fe) -> None:
    """testUnmatchedVars."""
    assert built(fe, "\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n") == []
    assert built(fe, "\nFROM alpine AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n") == []
    assert built(fe, "\nFROM alpine\nRUN echo $PATH\n") == []
    assert built(fe, "\nFROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n") == [
        ("UndefinedVar", "Usage of undefined variable '$foo'", 3)]
    assert built(fe, "\nFROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\n"
                     "ARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n") == [
        ("UndefinedVar", "Usage of undefined variable '$DIR_ASSET' (did you mean "
                         "$DIR_ASSETS?)", 6)]
    assert built(fe, "\nFROM alpine\nENV PATH=$PAHT:/tmp/bin\n") == [
        ("UndefinedVar", "Usage of undefined variable '$PAHT' (did you mean $PATH?)", 3)]


def test_all_targets_are_checked(fe) -> None:
    """testAllTargetUnmarshal: a build checks its target, --call=check every stage."""
    df = "\nFROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n"
    assert built(fe, df) == [("UndefinedVar", "Usage of undefined variable '$bar'", 6)]
    assert checked(fe, df) == [("UndefinedVar", "Usage of undefined variable '$foo'", 3),
                               ("UndefinedVar", "Usage of undefined variable '$bar'", 6)]


def test_workdir_relative_path(fe) -> None:
    assert built(fe, "\nFROM scratch\nWORKDIR app/\n") == [
        ("WorkdirRelativePath", 'Relative workdir "app/" can have unexpected results if the '
                                "base image changes", 3)]
    assert built(fe, "\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n") == []
    assert built(fe, "\nFROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n") == []


def test_multiple_instructions_disallowed(fe) -> None:
    df = ('\nFROM scratch\nENTRYPOINT ["/myapp"]\nENTRYPOINT ["/myotherapp"]\nCMD ["/myapp"]\n'
          'CMD ["/myotherapp"]\nHEALTHCHECK CMD ["/myapp"]\nHEALTHCHECK CMD ["/myotherapp"]\n')
    msg = ("Multiple {} instructions should not be used in the same stage because only the "
           "last one will be used")
    assert built(fe, df) == [("MultipleInstructionsDisallowed", msg.format(i), n)
                             for i, n in (("ENTRYPOINT", 3), ("CMD", 5), ("HEALTHCHECK", 7))]
    df = ('\nFROM scratch AS a\nENTRYPOINT ["/a"]\nCMD ["/a"]\n\nFROM a AS b\n'
          'ENTRYPOINT ["/b"]\nCMD ["/b"]\n')
    assert built(fe, df) == []


def test_legacy_key_value_format(fe) -> None:
    expected = [("LegacyKeyValueFormat", '"ENV key=value" should be used instead of legacy '
                                         '"ENV key value" format', 3),
                ("LegacyKeyValueFormat", '"LABEL key=value" should be used instead of legacy '
                                         '"LABEL key value" format', 4)]
    assert built(fe, "\nFROM scratch\nENV testkey value\nLABEL key value\n") == expected
    df = "\nFROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n"
    assert built(fe, df) == []  # stage b is not built
    assert [line for *_, line in checked(fe, df)] == [5, 6]


def test_redundant_target_platform_and_const_platform(fe) -> None:
    assert built(fe, "\nFROM --platform=$TARGETPLATFORM scratch\n") == [
        ("RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is "
                                    "redundant as this is the default behavior", 2)]
    assert built(fe, "\nFROM --platform=${TARGETPLATFORM} scratch\n")[0][1].startswith(
        "Setting platform to predefined ${TARGETPLATFORM} in FROM")
    assert built(fe, "\n# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM "
                     "scratch\n") == []
    assert built(fe, "\nFROM --platform=linux/amd64 scratch\n") == [
        ("FromPlatformFlagConstDisallowed", 'FROM --platform flag should not use constant value '
                                            '"linux/amd64"', 2)]
    assert built(fe, "\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n") == []
    assert built(fe, "\nFROM --platform=linux/amd64 scratch AS linux\n") == []


def test_invalid_default_arg_in_from(fe) -> None:
    """testInvalidDefaultArgInFrom: judged on the defaults, whatever the build args say."""
    assert built(fe, "\nARG VERSION\nFROM busybox:$VERSION\n", build_args={"VERSION": "latest"}
                 ) == [("InvalidDefaultArgInFrom", "Default value for ARG busybox:$VERSION "
                                                   "results in empty or invalid base image "
                                                   "name", 3)]
    assert built(fe, "\nARG IMAGE\nFROM $IMAGE\n", build_args={"IMAGE": "busybox:latest"})[0][
        1] == "Default value for ARG $IMAGE results in empty or invalid base image name"
    assert built(fe, '\nARG VERSION="latest"\nFROM busybox:${VERSION}\n',
                 build_args={"VERSION": "latest"}) == []
    assert built(fe, '\nARG V=""\nFROM busybox${V}\n', build_args={"V": ""}) == []


def test_expose_checks(fe) -> None:
    assert built(fe, "\nFROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n") == [
        ("ExposeProtoCasing", f"Defined protocol '{p}' in EXPOSE instruction should be "
                              "lowercase", 3) for p in ("80/TcP", "8080/TCP")]
    msg = "EXPOSE instruction should not define an IP address or host-port mapping, found '{}'"
    assert built(fe, "\nFROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n"
                 ) == [("ExposeInvalidFormat", msg.format(p), 3)
                       for p in ("127.0.0.1:80:80", "5000:5000", "[::1]:8080:8080")]


def test_copy_ignored_file(fe) -> None:
    """testCopyIgnoredFiles / testCopyIgnoredFileContextRoot."""
    ignore = ("Dockerfile",)
    assert built(fe, "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n",
                 dockerignore=ignore) == [
        ("CopyIgnoredFile", 'Attempting to Copy file "Dockerfile" that is excluded by '
                            ".dockerignore", 3),
        ("CopyIgnoredFile", 'Attempting to Add file "Dockerfile" that is excluded by '
                            ".dockerignore", 4)]
    assert built(fe, "# check=skip=CopyIgnoredFile\n\nFROM scratch\nCOPY Dockerfile .\n",
                 dockerignore=ignore) == []
    df = ("\nFROM scratch AS base\nCOPY Dockerfile /foobar\n\nFROM base\n"
          "COPY --from=base /foobar /D\n")
    assert built(fe, df, dockerignore=("foobar",)) == []
    assert built(fe, "\nFROM scratch\nCOPY ./Dockerfile .\n", dockerignore=("**", "!Dockerfile")
                 ) == []
    assert built(fe, "\nFROM scratch\nCOPY . .\n", dockerignore=(".*",)) == []
    assert built(fe, "\nFROM scratch\nCOPY . .\n", dockerignore=("*",)) == [
        ("CopyIgnoredFile", 'Attempting to Copy file "." that is excluded by .dockerignore', 3)]


def test_definition_description_is_experimental(fe) -> None:
    """testDefinitionDescription."""
    df = ("# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n"
          "# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\n"
          "ARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n")
    fmt = "Comment for {} should follow the format: `# {} <description>`"
    assert built(fe, df) == [("InvalidDefinitionDescription", fmt.format(i, n), line)
                             for i, n, line in (("ARG", "foo", 3), ("FROM", "base", 5),
                                                ("ARG", "version", 7), ("ARG", "<arg_key>", 9))]
    assert built(fe, df.replace("# check=experimental=InvalidDefinitionDescription",
                                "# check=skip=all")) == []


def test_base_image_platform_mismatch(fe) -> None:
    """testBaseImagePlatformMismatch: the resolver answered with another platform."""
    from pybuild.oci.platform import Platform

    got = built(fe, "\nFROM busybox\nENV foo=bar\n", platform=Platform.parse("linux/arm64"))
    assert got == [("InvalidBaseImagePlatform", 'Base image busybox was pulled with platform '
                                                '"linux/amd64", expected "linux/arm64" for '
                                                "current build", 2)]
    [w] = fe.compile("FROM busybox\n", platform=Platform.parse("linux/arm64")).warnings
    assert w.url == "" and w.short == ('InvalidBaseImagePlatform: Base image busybox was pulled '
                                       'with platform "linux/amd64", expected "linux/arm64" for '
                                       'current build (line 1)')


def test_warnings_before_error(fe) -> None:
    """testWarningsBeforeError: the check run keeps what it found before the error."""
    from tests.unit.conftest import AMD64

    df = b"\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n"
    report = lint_dockerfile(FrontendOptions(dockerfile=df, platform=AMD64), fe.resolver)
    assert [w.rule for w in report.warnings] == ["StageNameCasing", "MaintainerDeprecated"]
    assert report.error is not None
    assert report.error.message.startswith("unknown instruction: BADCMD")
    assert report.error.location is not None and report.error.location.start_line == 4
    assert report.status_code == 1


def test_warning_carries_what_buildx_prints(fe) -> None:
    [w] = fe.compile("FROM scratch\nMAINTAINER me\n").warnings
    assert w.short == ("MaintainerDeprecated: Maintainer instruction is deprecated in favor "
                       "of using label (line 2)")
    assert w.description == ("The MAINTAINER instruction is deprecated, use a label instead to "
                             "define an image author")
    assert w.url == "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    assert w.filename == "Dockerfile" and w.line == 2

"""Error messages: every error names the file, line and instruction and shows the line."""

from __future__ import annotations

import pytest

from pybuild.errors import UserError

CASES = [
    # (dockerfile, message fragment, line, instruction)
    ("FROM busybox\nFNTRYPOINT [\"x\"]\n",
     "unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)", 2, "FNTRYPOINT"),
    ("FROM busybox\nrum echo\n", "unknown instruction: rum (did you mean run?)", 2, "RUM"),
    ("FROM scratch\nRUN --mont=target=/x,type=tmpfs true\n",
     "unknown flag: --mont (did you mean mount?)", 2, "RUN"),
    ("FROM scratch\nCOPY --chown=a --chown=b x /\n", "duplicate flag specified: chown", 2,
     "COPY"),
    ("FROM scratch\nCOPY --from x /\n", "missing a value on flag: from", 2, "COPY"),
    ("FROM scratch\nCOPY --link=maybe x /\n",
     "expecting boolean value for flag link, not: maybe", 2, "COPY"),
    ("FROM scratch\nCOPY --link= x /\n", "missing a value on flag: link", 2, "COPY"),
    ("FROM scratch\nRUN --mount=typ=tmpfs true\n",
     "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)", 2, "RUN"),
    ("FROM scratch\nRUN --mount=type=tmp true\n",
     'unsupported mount type "tmp" (did you mean tmpfs?)', 2, "RUN"),
    ("FROM busybox AS test\nFROM busybox\nENV t=test\n"
     "RUN --mount=from=$t,type=cache,target=/tmp ls\n",
     "'from' doesn't support variable expansion, define alias stage instead", 4, "RUN"),
    ("FROM scratch\nCOPY x\n", "COPY requires at least two arguments, but only one was "
     "provided. Destination could not be determined", 2, "COPY"),
    ("FROM scratch\nCOPY x <<EOF\nhi\nEOF\n", "COPY cannot accept a heredoc as a destination",
     2, "COPY"),
    ("FROM busybox\nRUN <<EOF\necho\n", "unterminated heredoc", 2, "RUN"),
    ("FROM a b\n", "FROM requires either one or three arguments", 1, "FROM"),
    ("FROM busybox AS 1x\n", 'invalid name for build stage: "1x", name can\'t start with a '
     "number or contain symbols", 1, "FROM"),
    ("FROM scratch\nCOPY --from=nope$ARG x /\n", "variable expansion is not supported for "
     "--from, define a new stage with FROM using ARG from global scope as a workaround", 2,
     "COPY"),
    ("FROM scratch\nCOPY --from=7 x /\n", "invalid stage index 7", 2, "COPY"),
    ("FROM scratch AS a\nCOPY --from=b x /\nFROM scratch AS b\nCOPY --from=a y /\n",
     "circular dependency detected on stage: a", 4, "COPY"),
    ("FROM busybox AS first\nCOPY --from=later x /\nFROM busybox AS later\nFROM first\n",
     'cannot copy from stage "later", it needs to be defined before current stage '
     '"first"', 2, "COPY"),
    ("FROM busybox AS first\nRUN --mount=from=later,target=/x true\nFROM busybox AS later\n"
     "FROM first\n",
     'cannot mount from stage "later" to "/x", stage needs to be defined before current '
     "command", 2, "RUN"),
    ("FROM busybox\nARG X=\"${X:?you must set X}\"\n", "X: you must set X", 2, "ARG"),
    ("FROM busybox\nENV A=${B:?}\n", "B: is not allowed to be unset", 2, "ENV"),
    ("FROM $NOPE\n", "base name ($NOPE) should not be blank", 1, "FROM"),
    ("FROM --platform=$NOPE busybox\n", "empty platform value from expression $NOPE", 1,
     "FROM"),
    ("FROM doesnotexist\n", "doesnotexist:", 1, "FROM"),
    ("FROM busybox\nSTOPSIGNAL FOO\n", "invalid signal: FOO", 2, "STOPSIGNAL"),
    ("FROM busybox\nCOPY --chmod=64a x /\n", "invalid chmod parameter: '64a'. it should be "
     "octal string and between 0 and 07777", 2, "COPY"),
    ("FROM busybox\nADD --chmod=10000 x /\n", "invalid chmod parameter: '10000'. it should "
     "be octal string and between 0 and 07777", 2, "ADD"),
    ("FROM busybox\nCOPY http://x/y /\n", "source can't be a URL for COPY", 2, "COPY"),
    ("FROM busybox\nCOPY git@github.com:a/b.git /\n", "source can't be a git ref for COPY",
     2, "COPY"),
    ("FROM busybox\nCOPY --checksum=sha256:00 x /\n", "unknown flag: --checksum", 2, "COPY"),
    ("FROM busybox\nADD --checksum=sha256:00 x /\n",
     "checksum requires HTTP(S) or Git sources", 2, "ADD"),
    ("FROM busybox\nADD --checksum=md5:00 http://x/y /\n", "unsupported digest algorithm",
     2, "ADD"),
    ("FROM busybox\nADD --checksum=sha256:00 http://x/a http://x/b /\n",
     "checksum can't be specified for multiple sources", 2, "ADD"),
    ("FROM busybox\nADD https://h/r.git?ref=c#a /\n",
     "ref specified both in the URL fragment and the query", 2, "ADD"),
    ("FROM busybox\nADD --keep-git-dir=false https://h/r.git?keep-git-dir=true /\n",
     "inconsistent keep-git-dir configuration", 2, "ADD"),
    ("FROM busybox\nRUN --network=bridge true\n", 'network mode "bridge" not supported', 2,
     "RUN"),
    ("FROM busybox\nRUN --security=root true\n", 'security "root" is not valid', 2, "RUN"),
    ("FROM busybox\nRUN --mount=type=tmpfs,target=/ true\n", 'invalid mount target "/"', 2,
     "RUN"),
    ("FROM busybox\nRUN --mount=type=bind,mode=0700,target=/x true\n",
     'mode not allowed for "bind" type mounts', 2, "RUN"),
    ("FROM busybox\nRUN --mount=type=secret,sharing=shared,id=a true\n",
     "secret mount should not define sharing", 2, "RUN"),
    ("FROM busybox\nRUN --mount=type=secret,id=a,source=b true\n",
     "both source and id can't be set", 2, "RUN"),
    ("FROM busybox\nRUN --mount=size=1m,type=tmpfs,target=/t true\n",
     "unexpected key 'size' for mount type 'bind'", 2, "RUN"),
    ("FROM busybox\nRUN --mount=type=ssh,source=x true\n", "ssh does not support source", 2,
     "RUN"),
    ("FROM busybox\nRUN --mount=type=cache,target=/c,sharing=wide true\n",
     'unsupported sharing value "wide"', 2, "RUN"),
    ("FROM busybox\nRUN --mount=type=cache,target=/c,uid=x true\n",
     "invalid value x for uid", 2, "RUN"),
    ("FROM busybox\nWORKDIR\n", "WORKDIR requires exactly one argument", 2, "WORKDIR"),
    ("FROM busybox\nENV\n", "ENV requires at least one argument", 2, "ENV"),
    ("FROM busybox\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't "
     "allowed", 2, "ONBUILD"),
    ("FROM busybox\nONBUILD FROM x\n", "FROM isn't allowed as an ONBUILD trigger", 2,
     "ONBUILD"),
    ("RUN x\nFROM busybox\n", "no build stage in current context", 1, "RUN"),
]


@pytest.mark.parametrize(("dockerfile", "message", "line", "instruction"), CASES,
                         ids=[c[1][:40] for c in CASES])
def test_error_location(fe, dockerfile, message, line, instruction):
    with pytest.raises(UserError) as e:
        fe.compile(dockerfile, filename="df/Dockerfile.x")
    err = e.value
    assert message in err.message
    assert err.location is not None
    assert err.location.filename == "df/Dockerfile.x"
    assert err.location.start_line == line
    assert err.location.instruction == instruction
    assert err.location.text  # the line as written
    assert str(err).startswith(f"df/Dockerfile.x:{line}")


def test_no_stages_and_empty(fe):
    """testEmptyStages."""
    with pytest.raises(UserError, match="dockerfile contains no stages to build"):
        fe.compile("ARG X=1\n")
    with pytest.raises(UserError, match="the Dockerfile cannot be empty"):
        fe.compile(b"")


def test_target_mistype(fe):
    """testTargetMistype."""
    with pytest.raises(UserError) as e:
        fe.compile("FROM busybox AS build\nFROM busybox\n", target="bulid")
    assert e.value.message == 'target stage "bulid" could not be found (did you mean build?)'


def test_duplicate_stage_name_is_lint(fe):
    """testDuplicateStageName: BuildKit only warns; with check=error=true it fails."""
    df = "FROM busybox AS a\nRUN x\nFROM busybox AS a\nRUN y\nFROM a\n"
    r = fe.compile(df)
    assert any("DuplicateStageName" in w and ":3:" in w for w in map(str, r.warnings))
    with pytest.raises(UserError) as e:
        fe.compile("# check=error=true\n" + df)
    assert "lint violation found for rules: DuplicateStageName" in e.value.message
    assert e.value.location.start_line == 4
    fe.compile("# check=skip=DuplicateStageName;error=true\n" + df)
    fe.compile("# check=error=true\n" + df,
               build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=all"})


def test_resolver_error_suggests(fe):
    """convert.go: a failed base image lookup suggests a close stage or image name."""
    with pytest.raises(UserError) as e:
        fe.compile("FROM busybox AS build\nFROM biuld\n")
    assert "(did you mean build?)" in e.value.message

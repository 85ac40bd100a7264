"""ARG / ENV scoping and precedence (BEHAVIOURS.md §3), mirroring BuildKit's tests.

Each test names the BuildKit integration test it mirrors in its docstring. The RUN
environment is read from the ExecOp; history text from the image config.
"""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.oci.platform import Platform


def run_env(fe, df: str, index: int = -1, **opts) -> dict[str, str]:
    op = fe.execs(df, **opts)[index]
    return dict(e.split("=", 1) for e in op.env)


def test_meta_arg_only_visible_in_from(fe):
    """testGlobalArg: a meta ARG is not visible in the stage until re-declared."""
    df = "ARG tag=latest\nARG IMG=busybox\nFROM ${IMG}:${tag}\nRUN echo $tag\n"
    env = run_env(fe, df)
    assert "tag" not in env and "IMG" not in env
    df2 = "ARG tag=latest\nFROM busybox:${tag}\nARG tag\nRUN echo $tag\n"
    assert run_env(fe, df2)["tag"] == "latest"


def test_meta_arg_build_arg_overrides(fe):
    """testGlobalArg: --build-arg replaces the meta default without evaluating it."""
    df = "ARG tag=nosuch\nFROM busybox:${tag}\nARG tag\nRUN true\n"
    assert run_env(fe, df, build_args={"tag": "latest"})["tag"] == "latest"
    df3 = "ARG A=${UNDEF:?must be set}\nFROM busybox\n"
    fe.compile(df3, build_args={"A": "x"})  # default not evaluated


def test_multi_args_in_order(fe):
    """testMultiArgs: meta defaults expand against earlier meta args and platform args."""
    df = ('ARG a1="foo bar" a2=$a1-baz\nARG a3="${a2}-x"\nFROM busybox\n'
          "ARG a1 a3\nARG b=${a1}-${a3}\nRUN true\n")
    env = run_env(fe, df)
    assert env["a1"] == "foo bar"
    assert env["a3"] == "foo bar-baz-x"
    assert env["b"] == "foo bar-foo bar-baz-x"


def test_quoted_meta_args(fe):
    """testQuotedMetaArgs: quotes in meta defaults are removed."""
    df = 'ARG a1="box"\nARG a2="$a1-foo"\nFROM busy$a1 AS build\nARG a2\nRUN true\n'
    assert run_env(fe, df)["a2"] == "box-foo"


def test_global_arg_errors(fe):
    """testGlobalArgErrors / testArgDefaultExpansion: `${FOO:?msg}` in a default fails."""
    with pytest.raises(UserError) as e:
        fe.compile("ARG FOO=${FOO:?\"custom error\"}\nFROM busybox\n")
    assert "FOO: custom error" in e.value.message
    assert e.value.location.start_line == 1
    with pytest.raises(UserError) as e:
        fe.compile("FROM busybox\nARG BAR=${BAR:?}\n")
    assert "BAR: is not allowed to be unset" in e.value.message
    assert e.value.location.start_line == 2 and e.value.location.instruction == "ARG"
    fe.compile("FROM busybox\nARG BAR=${BAR:?}\n", build_args={"BAR": "set"})


def test_in_stage_precedence(fe):
    """testDefaultEnvWithArgs: build-arg > in-stage default > global value."""
    df = ("ARG G=global\nFROM busybox\nARG G\nARG H=${G}-h\nARG G=stage\nRUN true\n")
    env = run_env(fe, df)
    assert env["G"] == "stage" and env["H"] == "global-h"
    env = run_env(fe, df, build_args={"G": "cli"})
    assert env["G"] == "cli" and env["H"] == "cli-h"
    # global value is used only when the in-stage ARG has no default
    env = run_env(fe, "ARG G=global\nFROM busybox\nARG G=own\nRUN true\n")
    assert env["G"] == "own"


def test_unset_vs_empty_arg(fe):
    """testEmptyStringArgInEnv: `ARG FOO` is unset; `ARG BAR=` is exported as empty."""
    env = run_env(fe, "FROM busybox\nARG FOO\nARG BAR=\nRUN env\n")
    assert "FOO" not in env
    assert env["BAR"] == ""


def test_empty_build_arg_counts_as_set(fe):
    """testDefaultEnvWithArgs: --build-arg my_arg= is set (to empty); :- falls back."""
    df = "FROM busybox\nARG my_arg\nENV my_env=${my_arg:-def}\nRUN true\n"
    env = run_env(fe, df, build_args={"my_arg": ""})
    assert env["my_arg"] == "" and env["my_env"] == "def"


def test_arg_scope_ends_with_stage_but_children_inherit(fe):
    """code init(): ARGs are inherited by FROM <stage> children, not siblings."""
    df = ("FROM busybox AS base\nARG X=1\nFROM base AS child\nRUN true\n"
          "FROM busybox AS other\nRUN true\n")
    assert run_env(fe, df, target="child")["X"] == "1"
    assert "X" not in run_env(fe, df, target="other")


def test_arg_then_env_and_env_then_arg(fe):
    """kaniko#624 / code dispatchArg: the later instruction wins in the RUN env."""
    env = run_env(fe, "FROM busybox\nARG X=a\nENV X=v\nRUN true\n")
    assert env["X"] == "v"
    r = fe.compile("FROM busybox\nENV X=v\nARG X=w\nRUN true\n")
    op = fe.execs("FROM busybox\nENV X=v\nARG X=w\nRUN true\n")[-1]
    assert "X=w" in op.env
    assert "X=v" in r.config.config.env
    env = run_env(fe, "FROM busybox\nENV X=v\nARG X\nRUN true\n", build_args={"X": "cli"})
    assert env["X"] == "cli"


def test_arg_without_value_keeps_env(fe):
    """code: an ARG without a value does not touch an ENV of the same name."""
    env = run_env(fe, "FROM busybox\nENV X=v\nARG X\nRUN true\n")
    assert env["X"] == "v"


def test_arg_changes_invalidate_only_after_declaration(fe):
    """testBuiltinArgs: a changed build-arg changes the first RUN after its ARG."""
    df = "FROM busybox\nRUN one\nARG FOO\nRUN two\n"
    a = fe.execs(df, build_args={"FOO": "1"})
    b = fe.execs(df, build_args={"FOO": "2"})
    assert a[0] == b[0]
    assert a[1] != b[1]


def test_proxy_args_not_in_cache_key_or_history(fe):
    """testBuiltinArgs: undeclared proxy args reach RUN but not the cache key/history."""
    df = "FROM busybox\nRUN true\n"
    a = fe.compile(df, build_args={"http_proxy": "http://a"})
    b = fe.compile(df, build_args={"http_proxy": "http://b"})
    assert a.definition.to_json() == b.definition.to_json()
    op = fe.execs(df, build_args={"HTTP_PROXY": "http://a"})[0]
    assert "HTTP_PROXY=http://a" in op.proxy_env and "http_proxy=http://a" in op.proxy_env
    assert not any("proxy" in e.lower() for e in op.env)
    assert fe.history(df, build_args={"http_proxy": "x"}) == ["RUN /bin/sh -c true # buildkit"]
    # declared: part of env and history
    df2 = "FROM busybox\nARG http_proxy\nRUN true\n"
    op2 = fe.execs(df2, build_args={"http_proxy": "http://a"})[0]
    assert "http_proxy=http://a" in op2.env
    assert fe.history(df2, build_args={"http_proxy": "http://a"})[-1] == (
        "RUN |1 http_proxy=http://a /bin/sh -c true # buildkit")


def test_run_history_with_args(fe):
    """buildkit#915 runCommandString: `RUN |N K=V ... cmd`; unset ARGs show as K=."""
    df = "FROM busybox\nARG A=1 B\nENV A=2\nRUN echo\n"
    assert fe.history(df)[-1] == "RUN |2 A=2 B= /bin/sh -c echo # buildkit"
    assert fe.history(df)[0] == "ARG A=1 B"


def test_platform_args_global_and_in_stage(fe):
    """testPlatformArgsImplicit: automatic args usable in FROM, in-stage after ARG."""
    df = ("FROM busybox AS build\nARG TARGETPLATFORM TARGETOS TARGETARCH BUILDPLATFORM\n"
          "RUN true\n")
    env = run_env(fe, df, platform=Platform.parse("linux/arm64"))
    assert env["TARGETPLATFORM"] == "linux/arm64" and env["TARGETARCH"] == "arm64"
    assert env["BUILDPLATFORM"] == "linux/amd64"
    env = run_env(fe, "FROM busybox\nRUN true\n")
    assert "TARGETARCH" not in env


def test_platform_args_explicit_override(fe):
    """testPlatformArgsExplicit: build-arg:TARGETOS=freebsd overrides the automatic arg."""
    df = "FROM busybox\nARG TARGETOS TARGETPLATFORM\nRUN true\n"
    env = run_env(fe, df, build_args={"TARGETOS": "freebsd"})
    assert env["TARGETOS"] == "freebsd" and env["TARGETPLATFORM"] == "linux/amd64"


def test_platform_with_os_version(fe):
    """testPlatformWithOSVersion: TARGETPLATFORM uses FormatAll (OS version included)."""
    p = Platform(os="windows", architecture="amd64", os_version="10.0.17763.1")
    env = run_env(fe, "FROM scratch\nARG TARGETPLATFORM TARGETOSVERSION\nRUN x\n", platform=p)
    assert env["TARGETPLATFORM"] == "windows(10.0.17763.1)/amd64"
    assert env["TARGETOSVERSION"] == "10.0.17763.1"


def test_target_stage_arg(fe):
    """testTargetStageNameArg: TARGETSTAGE is the target name, `default` when unnamed."""
    df = "FROM busybox AS first\nARG TARGETSTAGE\nRUN a\nFROM first AS second\nRUN b\n"
    assert run_env(fe, df)["TARGETSTAGE"] == "second"
    assert run_env(fe, df, target="first")["TARGETSTAGE"] == "first"
    assert run_env(fe, "FROM busybox\nARG TARGETSTAGE\nRUN x\n")["TARGETSTAGE"] == "default"
    fe.resolver.images["default"] = fe.resolver.images["busybox"]
    fe.compile("FROM ${TARGETSTAGE}\n")
    assert fe.resolver.calls[-1][0] == "docker.io/library/default:latest"


def test_mount_meta_arg(fe):
    """testMountMetaArg: a re-declared meta ARG expands in --mount options."""
    df = ("ARG META_PATH=/tmp/meta\nFROM busybox\nARG META_PATH\n"
          "RUN --mount=type=cache,id=mycache,target=$META_PATH true\n")
    m = fe.execs(df)[-1].mounts[0]
    assert m.target == "/tmp/meta" and m.cache.id == "mycache"


def test_env_words_see_old_values(fe):
    """docs "Environment replacement": ENV abc=bye def=$abc sets def to the old abc."""
    env = run_env(fe, "FROM busybox\nENV abc=hello\nENV abc=bye def=$abc\nRUN true\n")
    assert env["def"] == "hello" and env["abc"] == "bye"


def test_env_redefined_moves_to_end(fe):
    """client/llb/meta.go EnvList: a redefined name moves to the end of the RUN env."""
    op = fe.execs("FROM busybox\nENV A=1 B=2\nENV A=3\nRUN true\n")[-1]
    assert op.env[-2:] == ("B=2", "A=3")
    r = fe.compile("FROM busybox\nENV A=1 B=2\nENV A=3\n")
    assert r.config.config.env[-2:] == ("A=3", "B=2")  # config replaces in place


def test_control_args_reach_env_when_declared(fe):
    """code nonEnvArgs: only the SBOM args stay out of the RUN env."""
    df = "FROM busybox\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nARG SOURCE_DATE_EPOCH\nRUN x\n"
    env = run_env(fe, df, build_args={"SOURCE_DATE_EPOCH": "0"})
    assert "BUILDKIT_SBOM_SCAN_STAGE" not in env and env["SOURCE_DATE_EPOCH"] == "0"


def test_source_date_epoch_history_created(fe):
    """testReproSourceDateEpoch: history entries get SOURCE_DATE_EPOCH as created."""
    r = fe.compile("FROM busybox\nENV A=1\n", build_args={"SOURCE_DATE_EPOCH": "86400"})
    assert r.config.history[-1].created == "1970-01-02T00:00:00Z"


def test_sandbox_hostname_and_cache_ns(fe):
    """testDockerfileCheckHostname / BUILDKIT_CACHE_MOUNT_NS control args."""
    op = fe.execs("FROM busybox\nRUN --mount=type=cache,target=/c true\n",
                  build_args={"BUILDKIT_SANDBOX_HOSTNAME": "box",
                              "BUILDKIT_CACHE_MOUNT_NS": "ns"})[-1]
    assert op.hostname == "box"
    assert op.mounts[0].cache.id == "ns//c"

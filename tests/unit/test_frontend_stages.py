"""The stage graph (BEHAVIOURS.md §0, §2, §12, §14): reachability, stage references,
ONBUILD triggers and named contexts."""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.llb import CopyAction, ExecOp, FileOp, SourceOp
from pybuild.oci.platform import Platform


def sources(r) -> list[str]:
    return sorted(op.identifier for op in r.definition.ops.values() if isinstance(op, SourceOp))


def exec_args(r) -> list[str]:
    d = r.definition
    return [d.ops[x].args[-1] for x in d.topological() if isinstance(d.ops[x], ExecOp)]


def test_only_reachable_stages_resolved(fe):
    """BEHAVIOURS §0: only stages the target needs are dispatched and resolved."""
    df = ("FROM doesnotexist AS unused\nRUN never\nFROM alpine AS dep\nRUN dep\n"
          "FROM busybox\nCOPY --from=dep /x /x\n")
    r = fe.compile(df)
    assert exec_args(r) == ["dep"]
    assert all("doesnotexist" not in ref for ref, _ in fe.resolver.calls)


def test_default_target_is_last_stage(fe):
    r = fe.compile("FROM busybox AS a\nRUN a\nFROM busybox AS b\nRUN b\n")
    assert exec_args(r) == ["b"]
    assert r.stage_name == "b"


def test_target_case_insensitive(fe):
    """testMultiStageCaseInsensitive: --target, COPY --from match names in any case."""
    df = "FROM busybox AS Build\nRUN b\nFROM busybox\nCOPY --from=BUILD /x /x\n"
    assert exec_args(fe.compile(df)) == ["b"]
    assert exec_args(fe.compile(df, target="BUILD")) == ["b"]


def test_from_stage_lookup_is_as_written(fe):
    """code: FROM <stage> only matches the lower-case spelling; else it is an image."""
    df = "FROM busybox AS base\nRUN base\nFROM Base\n"
    with pytest.raises(UserError, match='failed to parse stage name "Base"'):
        fe.compile(df)
    r = fe.compile("FROM busybox AS base\nRUN base\nFROM base\nRUN child\n")
    assert exec_args(r) == ["base", "child"]


def test_later_stage_name_in_from_is_an_image(fe):
    """BEHAVIOURS §2: only earlier stages count for FROM."""
    fe.resolver.images["later"] = fe.resolver.images["alpine"]
    r = fe.compile("FROM later AS first\nRUN x\nFROM busybox AS later\nFROM first\n")
    assert ("docker.io/library/later:latest", "linux/amd64") in fe.resolver.calls
    assert exec_args(r) == ["x"]


def test_stage_index_reference(fe):
    """testMultiStageImplicitFrom: COPY --from=<index>."""
    r = fe.compile("FROM busybox\nRUN zero\nFROM busybox\nCOPY --from=0 /a /a\n")
    assert exec_args(r) == ["zero"]


def test_implicit_image_stage(fe):
    """testMultiStageImplicitFrom: COPY --from=<image> pulls the image."""
    r = fe.compile("FROM scratch\nCOPY --from=alpine /etc/os-release /\n")
    assert "docker-image://docker.io/library/alpine:latest@" in " ".join(sources(r))


def test_out_of_order_stage(fe):
    """testOutOfOrderStage: a stage copied from must be defined before."""
    df = "FROM busybox AS target\nCOPY --from=build f /\nFROM busybox AS build\n"
    with pytest.raises(UserError, match='cannot copy from stage "build"'):
        fe.compile(df, target="target")


def test_from_platform(fe):
    """testPlatformArgsExplicit: FROM --platform expands meta args, sets the stage platform."""
    df = "ARG P=linux/arm64\nFROM --platform=$P busybox AS b\nRUN x\nFROM busybox\n" \
         "COPY --from=b /x /x\n"
    r = fe.compile(df)
    assert ("docker.io/library/busybox:latest", "linux/arm64") in fe.resolver.calls
    assert r.config.architecture == "amd64"
    df2 = "FROM --platform=$BUILDPLATFORM busybox\nARG TARGETARCH\nRUN x\n"
    op = next(o for o in fe.compile(df2, platform=Platform.parse("linux/arm64"))
          .definition.ops.values() if isinstance(o, ExecOp))
    assert "TARGETARCH=arm64" in op.env


def test_pull_scratch_image(fe):
    """testPullScratch: an image without layers is treated as scratch."""
    r = fe.compile("FROM empty\nENV A=1\n")
    assert r.definition.output is None
    assert r.config.config.env_dict()["A"] == "1"


def test_single_stage_has_no_stage_name(fe):
    r = fe.compile("FROM busybox\nRUN x\n")
    d = r.definition
    descs = [m.description for m in d.metadata.values() if m.description.startswith("[")]
    assert "[2/2] RUN x" in descs
    r = fe.compile("FROM busybox AS a\nRUN x\nFROM a\nRUN y\n")
    descs = [m.description for m in r.definition.metadata.values()]
    assert "[a 2/2] RUN x" in descs and "[stage-1 1/1] RUN y" in descs


def test_onbuild_from_parent_stage(fe):
    """testOnBuildInheritedStageRun: triggers of a parent stage run first in the child."""
    df = ("FROM busybox AS base\nONBUILD RUN trigger\nFROM base AS mid\nRUN own\n"
          "FROM scratch\nCOPY --from=mid /out/bar /\n")
    r = fe.compile(df)
    assert exec_args(r) == ["trigger", "own"]
    descs = [m.description for m in r.definition.metadata.values()]
    assert "[mid 1/2] ONBUILD RUN trigger" in descs


def test_onbuild_only_direct_children(fe):
    """testOnBuildWithChildStage / testOnBuildCleared: grandchildren do not run them."""
    df = ("FROM busybox AS base\nONBUILD RUN trigger\nFROM base AS mid\nRUN own\n"
          "FROM mid AS child\nRUN grand\n")
    r = fe.compile(df)
    assert exec_args(r) == ["trigger", "own", "grand"]
    assert r.config.config.on_build == ()


def test_onbuild_from_base_image(fe):
    """testOnBuildCleared: image triggers run once, then OnBuild is cleared."""
    fe.resolver.images["onb"] = fe.resolver.images["busybox"].replace(
        config=fe.resolver.images["busybox"].config.__class__(
            env=("PATH=/bin",), on_build=("RUN mkdir -p /out", "ENV X=1")))
    r = fe.compile("FROM onb AS base\nRUN own\nFROM base\nRUN child\n")
    assert exec_args(r) == ["mkdir -p /out", "own", "child"]
    assert r.config.config.on_build == ()
    assert r.config.config.env_dict()["X"] == "1"


def test_onbuild_new_deps(fe):
    """testOnBuildNewDeps: a trigger may COPY --from / mount from another stage."""
    cfg = fe.resolver.images["busybox"]
    fe.resolver.images["onb"] = cfg.replace(config=cfg.config.__class__(
        env=("PATH=/bin",), on_build=(
            "COPY --from=alpine /etc/alpine-release /out/r",
            "RUN --mount=type=bind,target=/in,from=inputstage cat /in/foo")))
    df = ("FROM busybox AS inputstage\nRUN echo foo > /foo\nFROM onb AS base\nRUN own\n")
    r = fe.compile(df)
    assert exec_args(r) == ["echo foo > /foo", "cat /in/foo", "own"]
    assert any("alpine" in s for s in sources(r))


def test_onbuild_trigger_error_points_at_from(fe):
    cfg = fe.resolver.images["busybox"]
    fe.resolver.images["bad"] = cfg.replace(config=cfg.config.__class__(
        on_build=("FNORD x",)))
    with pytest.raises(UserError) as e:
        fe.compile("FROM busybox\nRUN x\nFROM bad\n")
    assert "unknown instruction: FNORD" in e.value.message
    assert e.value.location.start_line == 3


def test_named_context_image_overrides_stage(fe):
    """testNamedImageContext: a named context replaces a stage; its RUN never runs."""
    cfg = fe.resolver.images["busybox"]
    fe.resolver.images["ctximg"] = cfg.replace(config=cfg.config.__class__(
        env=("PATH=/foobar:/bin",)))
    df = "FROM busybox AS base\nRUN never\nFROM base\nRUN echo $PATH\n"
    r = fe.compile(df, named_contexts={"base": "docker-image://ctximg"})
    assert exec_args(r) == ["echo $PATH"]
    op = next(o for o in r.definition.ops.values() if isinstance(o, ExecOp))
    assert "PATH=/foobar:/bin" in op.env
    assert any("ctximg" in s for s in sources(r))


def test_named_context_for_image_name(fe):
    """testNamedImageContext: `FROM busybox` with context busybox=docker-image://alpine."""
    r = fe.compile("FROM busybox\nRUN x\n", named_contexts={"busybox": "docker-image://alpine"})
    assert any("alpine" in s for s in sources(r))
    assert not any("busybox" in s for s in sources(r))


def test_named_local_context(fe):
    """testNamedLocalContext: local:DIR becomes a local://<name> source with a path attr."""
    r = fe.compile("FROM busybox\nCOPY --from=stuff /a /a\n",
                   named_contexts={"stuff": "local:/tmp/dir"})
    locals_ = [op for op in r.definition.ops.values() if isinstance(op, SourceOp)
               and op.identifier == "local://stuff"]
    assert locals_ and locals_[0].attrs == (("path", "/tmp/dir"),)
    copy = next(a for op in r.definition.ops.values() if isinstance(op, FileOp)
            for a in op.actions if isinstance(a, CopyAction))
    assert copy.from_context is False


def test_named_oci_layout_context(fe):
    """testNamedOCILayoutContext: oci-layout://DIR@DIGEST resolved through the resolver."""
    digest = "sha256:" + "c" * 64
    fe.resolver.images[f"oci-layout:///lay@{digest}"] = fe.resolver.images["alpine"]
    r = fe.compile("FROM base\nRUN x\n",
                   named_contexts={"base": f"oci-layout:///lay@{digest}"})
    assert any(s.startswith("oci-layout:///lay@sha256:") for s in sources(r))


def test_circular_reference(fe):
    with pytest.raises(UserError, match="circular dependency detected"):
        fe.compile("FROM busybox AS a\nRUN --mount=from=a,target=/x true\n")


def test_syntax_directive_warns(fe):
    """directives_test.go: `# syntax=` is recorded as a warning unless BUILDKIT_SYNTAX
    selects the built-in frontend."""
    r = fe.compile("# syntax=docker/dockerfile:1\nFROM busybox\n")
    assert any("syntax directive" in w and "Dockerfile:1" in w for w in map(str, r.warnings))
    r = fe.compile("# syntax=docker/dockerfile:1\nFROM busybox\n",
                   build_args={"BUILDKIT_SYNTAX": "dockerfile.v0"})
    assert not r.warnings


def test_multi_platform_prefix(fe):
    r = fe.compile("FROM busybox\nRUN x\n", build_args={"BUILDKIT_MULTI_PLATFORM": "1"})
    descs = [m.description for m in r.definition.metadata.values()]
    assert "[linux/amd64 2/2] RUN x" in descs


def test_named_context_name_not_a_reference(fe):
    """testNamedFilteredContext-style names: a context name need not be a valid image ref."""
    r = fe.compile("FROM busybox\nCOPY --from=My_Files /a /a\n",
                   named_contexts={"My_Files": "local:/srv/x"})
    assert "local://My_Files" in sources(r)

"""Progress names and op metadata (BuildKit's `prefixCommand`)."""

from __future__ import annotations

from pybuild.oci.platform import Platform
from tests.unit.conftest import image_config


def _names(r) -> list[str]:
    d = r.definition
    return [d.metadata[x].description for x in d.topological() if x in d.metadata]


def test_add_of_a_url_or_git_is_one_step(fe) -> None:
    """An ADD counts once, its remote source included: no more `[5/4] RUN` (BuildKit
    computes `pgName` once per ADD and names the source vertex with it)."""
    r = fe.compile("FROM busybox\nADD https://example.com/a.tgz /x\n"
                   "ADD https://github.com/a/b.git /y\nRUN true\n")
    labels = [n.split("] ")[0] + "]" for n in _names(r) if not n.startswith("[internal")]
    assert labels == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    meta = {m.description: m for m in r.definition.metadata.values()}
    source = meta["[internal] load remote file https://example.com/a.tgz"]
    assert source.step == "[2/4]" and source.instruction == "ADD"
    assert meta["[internal] load git source https://github.com/a/b.git"].step == "[3/4]"


def test_multi_platform_labels_carry_the_platform(fe) -> None:
    """buildx shows `[linux/arm64 build 2/3]`; a `--platform=$BUILDPLATFORM` stage that
    declares TARGETARCH shows the cross target: `[linux/amd64->arm64 build 2/3]`."""
    df = ("FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETARCH\nRUN make\n"
          "FROM alpine\nCOPY --from=build /out /out\n")
    r = fe.compile(df, platform=Platform.parse("linux/arm64"), multi_platform=True)
    names = _names(r)
    assert "[linux/amd64->arm64 build 2/2] RUN make" in names
    assert "[linux/arm64 stage-1 2/2] COPY --from=build /out /out" in names
    assert any(n.startswith("[linux/amd64 build 1/2] FROM docker.io/library/busybox")
               for n in names)
    single = _names(fe.compile(df, platform=Platform.parse("linux/arm64")))
    assert "[build 2/2] RUN make" in single


def test_op_metadata_is_typed(fe) -> None:
    """The builder gets the step label, the instruction and the platform as fields."""
    r = fe.compile("FROM busybox AS b\nRUN make\n", platform=Platform.parse("linux/arm64"),
                   multi_platform=True)
    [m] = [m for m in r.definition.metadata.values() if m.instruction == "RUN"]
    assert (m.step, m.instruction, m.text, m.platform, m.stage) == (
        "[linux/arm64 2/2]", "RUN", "RUN make", "linux/arm64", "b")
    assert m.description == "[linux/arm64 2/2] RUN make"


def test_heredoc_names_follow_buildkit(fe) -> None:
    """BuildKit names COPY/WORKDIR with its plain lexer (quotes removed: `COPY <<EOF`) and
    RUN with RawQuotes (`RUN <<'EOF'` kept); pybuild does the same."""
    names = _names(fe.compile("FROM busybox\nCOPY <<'EOF' /x\nhi\nEOF\nRUN <<'EOF'\necho hi\n"
                              "EOF\n"))
    assert "[2/3] COPY <<EOF /x" in names
    assert "[3/3] RUN <<'EOF' (echo hi)" in names


def test_onbuild_steps_are_numbered_like_buildkit(fe) -> None:
    """The FROM step is named when the base is resolved, before the triggers are counted
    (BuildKit's resolveReachableStages runs before initOnBuildTriggers), and every trigger
    adds to the total: `[1/2] FROM` then `[2/5] ONBUILD RUN`."""
    fe.resolver.images["ob"] = image_config(on_build=("RUN echo a", "ENV X=1", "COPY f /f"))
    names = [n for n in _names(fe.compile("FROM ob\nRUN b\n")) if not n.startswith("[internal")]
    assert [n.split(" ")[0] for n in names] == ["[1/2]", "[2/5]", "[3/5]", "[4/5]"]
    assert names[1:] == ["[2/5] ONBUILD RUN echo a", "[3/5] ONBUILD COPY f /f", "[4/5] RUN b"]


def test_syntax_directive_warning(fe) -> None:
    [w] = fe.compile("# syntax=docker/dockerfile:1\nFROM busybox\n").warnings
    assert w.rule == "" and w.line == 1
    assert w.short == ("ignoring the syntax directive 'docker/dockerfile:1': pybuild always "
                       "uses its built-in Dockerfile frontend (line 1)")
    [w] = fe.compile("FROM busybox\n", build_args={"BUILDKIT_SYNTAX": "my/frontend"}).warnings
    assert "BUILDKIT_SYNTAX=my/frontend" in w.message
    assert not fe.compile("# syntax=docker/dockerfile:1\nFROM busybox\n",
                          build_args={"BUILDKIT_SYNTAX": "dockerfile.v0"}).warnings

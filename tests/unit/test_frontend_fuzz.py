"""Property test: any mutated Dockerfile either compiles or raises UserError (with a
location), never another exception and never a hang."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.errors import UserError

CORPUS = [p.read_text() for p in sorted(
    (Path(__file__).resolve().parents[2] / "testdata" / "frontend").glob("*/Dockerfile"))]
LINES = sorted({line for text in CORPUS for line in text.splitlines()} | {
    "FROM busybox AS a", "FROM a", "FROM scratch", "FROM --platform=$BUILDPLATFORM busybox",
    "ARG X=${Y:-z}", "ARG X", "ENV A=$X B=${A}", "COPY --from=a /x /y", "COPY --from=0 . .",
    "ONBUILD RUN x", "ONBUILD COPY --from=a / /", "RUN --mount=type=cache,target=$X ls",
    "RUN --mount=from=a,target=/m ls", "WORKDIR $X", "USER ${X:?err}", "EXPOSE $X 80-81",
    "SHELL [\"bash\", \"-c\"]", "HEALTHCHECK --interval=1s CMD x", "STOPSIGNAL 9",
    "VOLUME [\"/a\"]", "LABEL a=b", "CMD [\"x\"]", "ENTRYPOINT x", "MAINTAINER m",
    "COPY <<EOF /f", "hello $X", "EOF", "RUN <<EOF", "ADD --chmod=u+x a /b",
})
TOKENS = ["$", "${", "}", "\"", "'", "\\", "<<", "<<-", "--", "=", ",", ":", "/./", "*",
          " ", "\n", "\t", "#", "[", "]", "AS", "--mount=", "--from=", "--chmod=", "\x00",
          "é", "\ufeff", "$X", "${X:?}", "-"]


@st.composite
def dockerfiles(draw: st.DrawFn) -> str:
    lines = draw(st.one_of(
        st.sampled_from(CORPUS).map(str.splitlines),
        st.lists(st.sampled_from(LINES), min_size=1, max_size=12),
    ))
    for _ in range(draw(st.integers(0, 6))):
        if not lines:
            lines = ["FROM busybox"]
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.integers(0, 4))
        line = lines[i]
        if kind == 0:
            pos = draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + draw(st.sampled_from(TOKENS)) + line[pos:]
        elif kind == 1 and line:
            pos = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:pos] + line[pos + 1:]
        elif kind == 2:
            lines.insert(i, draw(st.sampled_from(LINES)))
        elif kind == 3:
            del lines[i]
        else:
            lines[i] = draw(st.text(max_size=30))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                             HealthCheck.function_scoped_fixture])
@given(text=dockerfiles(), target=st.sampled_from(["", "a", "build"]),
       args=st.dictionaries(st.sampled_from(["X", "Y", "BASE", "http_proxy"]),
                            st.sampled_from(["", "v", "$X", "busybox"]), max_size=2))
def test_mutated_dockerfiles_compile_or_user_error(fe, text, target, args):
    try:
        fe.compile(text, target=target, build_args=args)
    except UserError as exc:
        # every error a user sees points somewhere (file at least)
        assert exc.message
        if exc.location is not None:
            assert exc.location.filename == "Dockerfile"

"""A multi-stage build end to end, its config read back by skopeo and compared field by
field with what BuildKit writes for these instructions (BEHAVIOURS.md §3-§13)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.conftest import run_pybuild, tool

DOCKERFILE = """\
ARG BASE=busybox
FROM ${BASE} AS build
ARG VERSION=1.0
ENV BUILD_DIR=/src
WORKDIR $BUILD_DIR
RUN echo "v$VERSION" > version.txt && mkdir -p out && cp version.txt out/

FROM ${BASE}
ARG VERSION
ENV APP_HOME=/app PATH=/app/bin:$PATH
COPY --from=build /src/out/ /app/
WORKDIR /app
CMD ["ignored-by-entrypoint-below?"]
ENTRYPOINT ["/bin/sh", "-c"]
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD cat /app/version.txt
STOPSIGNAL SIGQUIT
VOLUME /data
LABEL org.example.version=$VERSION
USER nobody:nogroup
"""


def test_multi_stage_config_matches_buildkit(fresh_root: Path, tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    r = run_pybuild(fresh_root, "build", "--build-arg", "VERSION=2.5", "-t", "ms:1", str(ctx))
    assert r.code == 0, r.err
    out = tmp_path / "ms.tar"
    assert run_pybuild(fresh_root, "export", "ms:1", "-o", f"type=oci,dest={out}").code == 0
    # --raw: the config blob itself, Docker-only fields (Healthcheck) included.
    cfg = json.loads(subprocess.run([skopeo, "inspect", "--config", "--raw",
                                     f"oci-archive:{out}"],
                                    check=True, capture_output=True, text=True).stdout)
    c = cfg["config"]
    assert c["Env"] == [
        "PATH=/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "APP_HOME=/app",
    ]
    assert c["WorkingDir"] == "/app"
    assert c["User"] == "nobody:nogroup"
    # CMD set earlier in the same stage survives ENTRYPOINT (testCmdShell's rule).
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["ignored-by-entrypoint-below?"]
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "cat /app/version.txt"],
                                "Interval": 30_000_000_000, "Timeout": 5_000_000_000,
                                "Retries": 3}
    assert c["StopSignal"] == "SIGQUIT"
    assert c["Volumes"] == {"/data": {}}
    assert c["Labels"] == {"org.example.version": "2.5"}
    history = [h["created_by"] for h in cfg["history"][1:]]
    assert history[0] == "ARG VERSION=2.5"
    assert history[1] == "ENV APP_HOME=/app PATH=/app/bin:/usr/local/sbin:/usr/local/bin:" \
                         "/usr/sbin:/usr/bin:/sbin:/bin"
    assert history[2] == "COPY /src/out/ /app/ # buildkit"
    assert history[3] == "WORKDIR /app"
    assert history[-1] == "USER nobody:nogroup"
    # Only the COPY made a layer in this stage: WORKDIR /app already exists after it.
    layered = [h for h in cfg["history"] if not h.get("empty_layer")]
    assert len(layered) == len(cfg["rootfs"]["diff_ids"])
    # The file the first stage built, with the build arg's value.
    files = tmp_path / "fs"
    assert run_pybuild(fresh_root, "export", "ms:1", "-o", f"type=local,dest={files}").code == 0
    assert (files / "app" / "version.txt").read_text() == "v2.5\n"
    assert (files / "app" / "version.txt").stat().st_uid == 0  # --from files keep owners

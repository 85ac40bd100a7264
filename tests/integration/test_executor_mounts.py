"""RUN --mount: secret, ssh, cache, tmpfs, bind; pybuild's mount points stay out of layers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.integration.conftest import PybuildRunner, run_pybuild
from tests.integration.test_executor_support import (
    api_build,
    image_layers,
    last_layer,
    write_context,
)

SECRET = "s3cr3t-" + os.urandom(8).hex()


def _secret_file(d: Path) -> Path:
    p = d / "token"
    p.write_text(SECRET)
    p.chmod(0o600)
    return p


def test_secret_file_env_and_later_step(fresh_root: Path, tmp_path: Path, trav: Path) -> None:
    src = _secret_file(trav)
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
ARG EXPECT
RUN --mount=type=secret,id=tok \\
    stat -c '%a %u %g' /run/secrets/tok > /perm && \\
    [ "$(cat /run/secrets/tok)" = "$EXPECT" ] && echo file-ok > /ok1
RUN --mount=type=secret,id=tok,target=/deep/x/tok,mode=0440,uid=1000,gid=1000 \\
    stat -c '%a %u %g' /deep/x/tok > /perm2
RUN --mount=type=secret,id=envtok,env=MY_TOKEN \\
    [ "$MY_TOKEN" = "$EXPECT" ] && echo env-ok > /ok2 && [ ! -e /run/secrets/envtok ]
RUN ! cat /run/secrets/tok 2>/dev/null && ! env | grep -v ^EXPECT= | grep -q "$EXPECT" && \\
    echo later-ok > /ok3
""")
    r = api_build(fresh_root, ctx, tags=["sec:1"], build_args=[["EXPECT", SECRET]],
                  secrets=[["tok", "file", str(src)], ["envtok", "env", "PB_TEST_SECRET"]],
                  env={"PB_TEST_SECRET": SECRET})
    assert r.code == 0, r.err
    # The build arg carries the expected value into the steps' env (not a secret); the
    # secret itself must not show in layers, other than through that arg.
    layers = image_layers(fresh_root, "sec:1", tmp_path)
    files = {k: v for layer in layers[1:] for k, v in layer.items()}
    assert files["perm"].data == b"400 0 0\n"
    assert files["perm2"].data == b"440 1000 1000\n"
    for ok in ("ok1", "ok2", "ok3"):
        assert ok in files
    # Mount points (including nested /deep/x and /run/secrets) are not in any layer.
    for layer in layers[1:]:
        for name in layer:
            assert not name.startswith(("run", "deep", "etc")), name
        for entry in layer.values():
            assert SECRET.encode() not in entry.data


def test_secret_bytes_never_reach_the_root(fresh_root: Path, tmp_path: Path, trav: Path) -> None:
    src = _secret_file(trav)
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok | wc -c > /len
RUN --mount=type=secret,id=tok,env=T sh -c 'test -n "$T"' && echo done > /d
""")
    r = api_build(fresh_root, ctx, tags=["sec:2"], secrets=[["tok", "file", str(src)]])
    assert r.code == 0, r.err
    assert SECRET not in r.err and SECRET not in r.out
    needle = SECRET.encode()
    for dirpath, _, filenames in os.walk(fresh_root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                data = f.read()
            assert needle not in data, p
            if data[:2] == b"\x1f\x8b":
                import gzip

                assert needle not in gzip.decompress(data), p


def test_required_secret_missing_is_a_clear_error(fresh_root: Path, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM busybox\n"
                        "RUN --mount=type=secret,id=nope,required=true true\n")
    r = api_build(fresh_root, ctx)
    assert r.code == 1
    assert "secret nope not found" in r.err and "Dockerfile:2" in r.err
    assert "Traceback" not in r.err
    # Optional and missing: the step runs without it.
    ctx2 = write_context(tmp_path / "ctx2", "FROM busybox\n"
                         "RUN --mount=type=secret,id=nope [ ! -e /run/secrets/nope ]\n")
    assert api_build(fresh_root, ctx2).code == 0


def test_ssh_agent_socket_is_forwarded(fresh_root: Path, tmp_path: Path, trav: Path) -> None:
    agent = trav / "agent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(agent))
    srv.listen()
    try:
        ctx = write_context(tmp_path / "ctx", "FROM busybox\n"
                            "RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && "
                            "echo \"$SSH_AUTH_SOCK\" > /sock\n")
        r = api_build(fresh_root, ctx, tags=["ssh:1"], ssh=[["default", str(agent)]])
        assert r.code == 0, r.err
        files = last_layer(fresh_root, "ssh:1", tmp_path)
        assert files["sock"].data == b"/run/buildkit/ssh_agent.0\n"
        assert not any(n.startswith("run") for n in files)
        # Without --ssh an ssh mount is optional, as BuildKit's default (required=false):
        # the step runs without a socket (and here fails its own test of it)...
        r = api_build(fresh_root, ctx, no_cache=True)
        assert r.code == 1 and "exit code: 1" in r.err and "no SSH agent" not in r.err
        # ...and `required=true` refuses to run it.
        required = write_context(tmp_path / "ctx2", "FROM busybox\n"
                                 "RUN --mount=type=ssh,required=true true\n")
        r = api_build(fresh_root, required, no_cache=True)
        assert r.code == 1 and "no SSH agent" in r.err and "Dockerfile:2" in r.err
    finally:
        srv.close()


def test_cache_mounts_persist_and_share(fresh_root: Path, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox AS seed
RUN mkdir -p /seed && echo seeded > /seed/s
FROM busybox
RUN --mount=type=cache,target=/c,id=c1 echo one >> /c/log && cat /c/log > /seen1
RUN --mount=type=cache,target=/c2,id=c2,from=seed,source=/seed,mode=0700,uid=1000 \\
    cat /c2/s > /seeded && stat -c '%a %u' /c2 > /c2perm
RUN --mount=type=cache,target=/l,id=c3,sharing=locked echo locked > /l/x && cat /l/x > /lk
RUN --mount=type=cache,target=/p,id=c4,sharing=private echo private > /p/x && cat /p/x > /pv
""")
    r = run_pybuild(fresh_root, "build", "-t", "cache:1", str(ctx))
    assert r.code == 0, r.err
    layers = image_layers(fresh_root, "cache:1", tmp_path)
    files = {k: v for layer in layers[1:] for k, v in layer.items()}
    assert files["seen1"].data == b"one\n"
    assert files["seeded"].data == b"seeded\n"
    assert files["c2perm"].data == b"700 1000\n"
    assert files["lk"].data == b"locked\n" and files["pv"].data == b"private\n"
    for layer in layers[1:]:
        assert not any(n in ("c", "c2", "l", "p") or n.startswith(("c/", "l/", "p/"))
                       for n in layer), layer.keys()
    # Persistent across builds, and not part of the cache key.
    r = run_pybuild(fresh_root, "build", "--no-cache", "-t", "cache:2", str(ctx))
    assert r.code == 0, r.err
    files = {k: v for layer in image_layers(fresh_root, "cache:2", tmp_path)[1:]
             for k, v in layer.items()}
    assert files["seen1"].data == b"one\none\n"


def test_locked_cache_serialises_concurrent_steps(fresh_root: Path, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox AS a
RUN --mount=type=cache,target=/l,id=lk,sharing=locked \\
    [ ! -e /l/busy ] && touch /l/busy && sleep 0.5 && rm /l/busy && echo a > /a
FROM busybox AS b
RUN --mount=type=cache,target=/l,id=lk,sharing=locked \\
    [ ! -e /l/busy ] && touch /l/busy && sleep 0.5 && rm /l/busy && echo b > /b
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
""")
    r = run_pybuild(fresh_root, "build", "--max-parallelism", "2", str(ctx))
    assert r.code == 0, r.err


def test_tmpfs_and_rw_bind_leave_nothing(pybuild: PybuildRunner, shared_root: Path,
                                         tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN --mount=type=tmpfs,target=/scratch,size=1m df -k /scratch | tail -1 > /df && \\
    echo x > /scratch/f
RUN --mount=type=bind,target=/src,rw echo changed > /src/data.txt && cat /src/data.txt > /saw
""", {"data.txt": "original\n"})
    r = pybuild("build", "-t", "tmpfsbind:1", str(ctx))
    assert r.code == 0, r.err
    assert (ctx / "data.txt").read_text() == "original\n"  # rw bind writes are discarded
    layers = image_layers(shared_root, "tmpfsbind:1", tmp_path)
    assert layers[-1].keys() == {"saw"}
    assert layers[-1]["saw"].data == b"changed\n"
    assert layers[-2].keys() == {"df"}
    assert layers[-2]["df"].data.split()[1] == b"1024"

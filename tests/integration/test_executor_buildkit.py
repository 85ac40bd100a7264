"""Executor semantics that must match current BuildKit, asserted on the built image.

Sources (moby/buildkit 73ed6825): executor/oci/user.go `ensureAdditionalGids`
(testUserAdditionalGids), solver/llbsolver/ops/user_linux.go `readUser`, client/llb
fileop.go `WithUser`, fsutil copy's MkdirAll, and the mount options of
dockerfile2llb/convert_runmount.go (`ro` applies to every mount type).
"""

from __future__ import annotations

import socket
from pathlib import Path

from pybuild.digest import Digest
from tests.integration.conftest import PybuildRunner, run_pybuild
from tests.integration.test_executor_support import (
    EMPTY_TAR,
    api_build,
    busybox_layer,
    craft_image,
    gzip_bytes,
    image_layers,
    last_layer,
    write_context,
)

ADD_APP = ("RUN echo 'app:x:1000:2000::/home/app:/bin/sh' >> /etc/passwd && "
           "echo 'appgrp:x:2000:' >> /etc/group && echo 'extra:x:3000:app' >> /etc/group\n")


def test_the_primary_gid_is_always_a_supplementary_group(pybuild: PybuildRunner,
                                                          tmp_path: Path) -> None:
    # testUserAdditionalGids, and the table of conformance-gaps (e).
    ctx = write_context(tmp_path / "ctx", "FROM busybox\n" + ADD_APP + """\
USER 1234
RUN [ "$(id)" = "uid=1234 gid=0(root) groups=0(root)" ]
USER app:extra
RUN [ "$(id)" = "uid=1000(app) gid=3000(extra) groups=3000(extra)" ]
USER app
RUN [ "$(id)" = "uid=1000(app) gid=2000(appgrp) groups=2000(appgrp),3000(extra)" ]
USER root
RUN [ "$(id)" = "uid=0(root) gid=0(root) groups=0(root),10(wheel)" ]
""")
    r = pybuild("build", "--progress", "plain", str(ctx))
    assert r.code == 0, r.err


def test_chown_by_name_takes_the_users_primary_gid_as_buildkit(pybuild: PybuildRunner,
                                                                shared_root: Path,
                                                                tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM busybox\n" + ADD_APP + """\
COPY --chown=app f /o/named
COPY --chown=app: f /o/emptygroup
COPY --chown=1000 f /o/numeric
COPY --chown=app:extra f /o/group
COPY --chown=nosuchuser f /o/nouser
COPY --chown=app:nosuchgroup f /o/nogroup
COPY --chmod=4755 f /p/q/setuid
USER app
WORKDIR /named
""", {"f": "x\n"})
    r = pybuild("build", "--progress", "plain", "-t", "chown:1", str(ctx))
    assert r.code == 0, r.err
    # Unknown names are not errors (BuildKit uses 0:0 / keeps the gid) but are reported.
    assert "'nosuchuser' is not in the image's /etc/passwd" in r.err
    assert "'nosuchgroup' is not in the image's /etc/group" in r.err
    files = {k: v for layer in image_layers(shared_root, "chown:1", tmp_path)[1:]
             for k, v in layer.items()}

    def owner(name: str) -> tuple[int, int]:
        return files[name].info.uid, files[name].info.gid

    assert owner("o/named") == (1000, 2000)  # readUser: the primary gid from /etc/passwd
    assert owner("o/emptygroup") == (1000, 0)  # WithUser: an empty group name is id 0
    assert owner("o/numeric") == (1000, 1000)  # a numeric user: gid = uid
    assert owner("o/group") == (1000, 3000)
    assert owner("o/nouser") == (0, 0)
    assert owner("o/nogroup") == (1000, 2000)  # an unknown group keeps the user's gid
    assert owner("named") == (1000, 2000)  # WORKDIR under USER app
    # Parents made by --chmod=4755 get its permission bits only (Go's os.FileMode).
    assert files["p"].info.mode == 0o755 and files["p/q"].info.mode == 0o755
    assert files["p/q/setuid"].info.mode == 0o4755


def test_repeated_layers_in_one_chain_build(pybuild: PybuildRunner, shared_root: Path,
                                            tmp_path: Path) -> None:
    # Two byte-identical layers share one snapshot: overlayfs refuses a lowerdir given
    # twice (ELOOP), so only the topmost is stacked (rootfs, bind source, copy source).
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox AS rep
COPY f /x
COPY g /x
COPY f /x
COPY f /x
RUN cat /x > /y
COPY g /z
FROM busybox
COPY --from=rep /y /from-rep
RUN --mount=type=bind,from=rep,target=/m cat /m/x /m/z > /bound
""", {"f": "f\n", "g": "g\n"})
    r = pybuild("build", "--progress", "plain", "-t", "rep:1", str(ctx))
    assert r.code == 0, r.err
    files = {k: v for layer in image_layers(shared_root, "rep:1", tmp_path)[1:]
             for k, v in layer.items()}
    assert files["from-rep"].data == b"f\n"
    assert files["bound"].data == b"f\ng\n"


def test_a_base_image_that_repeats_its_empty_layer_builds(fresh_root: Path,
                                                          base_layout: Path,
                                                          tmp_path: Path, trav: Path) -> None:
    # The classic builder and BuildKit >= 0.10 write this empty layer for a no-op step.
    blob, diff_id = busybox_layer(base_layout)
    empty = str(Digest.from_bytes(EMPTY_TAR))
    layout = craft_image(base_layout, trav / "rep", "1", [blob, gzip_bytes(EMPTY_TAR),
                                                          gzip_bytes(EMPTY_TAR)],
                         [diff_id, empty, empty])
    r = run_pybuild(fresh_root, "load", "-i", str(layout), "-t", "repeats:1")
    assert r.code == 0, r.err
    ctx = write_context(tmp_path / "ctx", "FROM repeats:1\nRUN echo ran > /ran\n"
                        "COPY f /f\n", {"f": "f\n"})
    r = run_pybuild(fresh_root, "build", "-t", "onrepeats:1", str(ctx))
    assert r.code == 0, r.err
    layers = image_layers(fresh_root, "onrepeats:1", tmp_path)
    assert layers[-2]["ran"].data == b"ran\n" and layers[-1]["f"].data == b"f\n"


def test_read_only_cache_and_tmpfs_mounts_are_read_only(pybuild: PybuildRunner,
                                                        shared_root: Path,
                                                        tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN --mount=type=cache,target=/c,id=ro-cache echo seeded > /c/f
RUN --mount=type=cache,target=/c,id=ro-cache,ro cat /c/f > /read && \\
    ! touch /c/new 2>/dev/null && echo ro > /cache-ro
RUN --mount=type=tmpfs,target=/t,readonly ! touch /t/x 2>/dev/null && echo ro > /tmpfs-ro
RUN --mount=type=tmpfs,target=/t touch /t/x && echo rw > /tmpfs-rw
""")
    r = pybuild("build", "--progress", "plain", "-t", "romounts:1", str(ctx))
    assert r.code == 0, r.err
    files = {k: v for layer in image_layers(shared_root, "romounts:1", tmp_path)[1:]
             for k, v in layer.items()}
    assert files["read"].data == b"seeded\n"
    assert files["cache-ro"].data == b"ro\n" and files["tmpfs-ro"].data == b"ro\n"
    assert files["tmpfs-rw"].data == b"rw\n"


def test_ssh_socket_gets_the_mounts_owner_and_mode(fresh_root: Path, tmp_path: Path,
                                                   trav: Path) -> None:
    agent = trav / "agent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(agent))
    srv.listen()
    try:
        ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN --mount=type=ssh,uid=1000,gid=1001,mode=0660 stat -c '%u %g %a' "$SSH_AUTH_SOCK" > /set
RUN --mount=type=ssh stat -c '%u %g %a' "$SSH_AUTH_SOCK" > /default
USER 1000
RUN --mount=type=ssh,uid=1000,target=/tmp/agent test -w /tmp/agent && echo ok > /tmp/w
""")
        r = api_build(fresh_root, ctx, tags=["sshmode:1"], ssh=[["default", str(agent)]])
        assert r.code == 0, r.err
        files = {k: v for layer in image_layers(fresh_root, "sshmode:1", tmp_path)[1:]
                 for k, v in layer.items()}
        assert files["set"].data == b"1000 1001 660\n"
        assert files["default"].data == b"0 0 600\n"  # BuildKit's defaults
        assert files["tmp/w"].data == b"ok\n"
    finally:
        srv.close()


def test_no_hostname_variable_but_the_uts_name(pybuild: PybuildRunner, shared_root: Path,
                                               tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN env > /env && hostname > /uts && sh -c 'echo "$HOSTNAME"' > /shellvar
""")
    r = pybuild("build", "-t", "hostname:1", str(ctx))
    assert r.code == 0, r.err
    files = last_layer(shared_root, "hostname:1", tmp_path)
    assert b"HOSTNAME=" not in files["env"].data
    assert files["uts"].data == b"buildkitsandbox\n"
    # busybox sh sets the (unexported) variable from the UTS name, as under BuildKit.
    assert files["shellvar"].data == b"buildkitsandbox\n"


def test_run_as_an_unknown_user_is_still_an_error(pybuild: PybuildRunner,
                                                  tmp_path: Path) -> None:
    # BuildKit's executor (GetUser) fails; only --chown and WORKDIR fall back to 0:0.
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nUSER nosuch\nRUN true\n")
    r = pybuild("build", str(ctx))
    assert r.code == 1
    assert "unable to find user nosuch" in r.err and "Traceback" not in r.err

"""The step's environment as BuildKit sets it, and the network modes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PybuildRunner
from tests.integration.test_executor_support import image_layers, last_layer, write_context


def test_step_environment_matches_buildkit(pybuild: PybuildRunner, shared_root: Path,
                                           tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN env | sort > /env && hostname > /hostname && cat /etc/hosts > /hosts && pwd > /pwd
RUN ["/bin/echo", "$HOME", "exec form has no shell"]
RUN echo 'bob:x:1000:1000::/home/bob:/bin/sh' >> /etc/passwd && \\
    echo 'bob:x:1000:' >> /etc/group && echo 'extra:x:2000:bob' >> /etc/group
USER bob
RUN id > /tmp/id && cat /tmp/id
""")
    r = pybuild("build", "--progress", "plain", "-t", "env:1", str(ctx))
    assert r.code == 0, r.err
    assert "$HOME exec form has no shell" in r.err  # no shell expanded it
    assert "uid=1000(bob) gid=1000(bob) groups=1000(bob),2000(extra)" in r.err
    all_layers = image_layers(shared_root, "env:1", tmp_path)
    layers = {}
    for layer in all_layers:
        layers.update(layer)
    env = layers["env"].data.decode().splitlines()
    # BuildKit sets the UTS name only (GenerateSpec: oci.WithHostname); no HOSTNAME
    # variable is exported to the step (busybox sh sets an unexported one from uname).
    assert not [e for e in env if e.startswith("HOSTNAME=")]
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env
    assert "HOME=/root" in env
    assert layers["hostname"].data == b"buildkitsandbox\n"
    assert layers["hosts"].data.decode().startswith("127.0.0.1\tlocalhost buildkitsandbox\n")
    assert layers["pwd"].data == b"/\n"
    # /etc/hosts and /etc/resolv.conf were bind mounts: not in any layer we made.
    for layer in all_layers[1:]:
        assert "etc/hosts" not in layer and "etc/resolv.conf" not in layer


def test_missing_workdir_is_created_owned_by_the_user(tmp_path: Path) -> None:
    import os

    from pybuild.builder.executor.daemon.mountpoints import make_workdir

    root = tmp_path / "rootfs"
    (root / "a").mkdir(parents=True)
    make_workdir(str(root), "/a/b/c", os.getuid(), os.getgid())
    assert (root / "a" / "b" / "c").is_dir()
    assert oct((root / "a" / "b").stat().st_mode & 0o777) == "0o755"


@pytest.fixture
def tcp_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's 127.0.0.1 that records what clients send."""
    received: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(30)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while chunk := conn.recv(4096):
                        data += chunk
                except OSError:
                    pass
                received.append(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], received
    srv.close()


def test_network_none_has_only_loopback(pybuild: PybuildRunner, shared_root: Path,
                                        tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
FROM busybox
RUN --network=none ls /sys/class/net > /ifaces && ip link show lo > /lo && \\
    (nc -l -p 4321 > /got & for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do \\
       sleep 0.2; echo ping | nc -w 2 127.0.0.1 4321 && break; done; wait) ; \\
    cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /devs
""")
    r = pybuild("build", "--progress", "plain", "-t", "netnone:1", str(ctx))
    assert r.code == 0, r.err
    files = last_layer(shared_root, "netnone:1", tmp_path)
    assert files["ifaces"].data.split() == [b"lo"]
    assert files["devs"].data.split() == [b"lo"]
    assert b"UP" in files["lo"].data  # loopback is up
    assert files["got"].data == b"ping\n"


@pytest.mark.parametrize("mode", ["default", "host"])
def test_default_and_host_reach_the_hosts_loopback(
        mode: str, pybuild: PybuildRunner, tmp_path: Path,
        tcp_server: tuple[int, list[bytes]]) -> None:
    port, received = tcp_server
    ctx = write_context(tmp_path / "ctx", f"""\
FROM busybox
RUN echo hello-{mode} | nc -w 5 127.0.0.1 {port}
""")
    args = ["build", "--progress", "plain", "--no-cache", str(ctx)]
    if mode == "host":
        args[1:1] = ["--network", "host"]
    r = pybuild(*args)
    assert r.code == 0, r.err
    for _ in range(50):
        if received:
            break
        threading.Event().wait(0.1)
    assert f"hello-{mode}\n".encode() in received

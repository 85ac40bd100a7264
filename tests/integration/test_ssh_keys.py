"""`--ssh ID=KEYFILE[,KEYFILE...]`: keys served by a private ssh-agent for the build's
duration (pybuild/sshagents.py), as buildx serves key files; and `RUN --mount=type=ssh`
without `--ssh`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pybuild.errors import UserError
from pybuild.request import BuildRequest, SSHAgent
from pybuild.sshagents import key_agents
from tests.integration.conftest import PybuildRunner
from tests.integration.test_executor_support import write_context
from tests.tooling import pybuild_tmpdir, require_tool

pytestmark = pytest.mark.requires("ssh-agent", "ssh-add", "ssh-keygen")


def _key(path: Path, passphrase: str = "") -> Path:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", passphrase,
                    "-C", path.name, "-f", str(path)], check=True)
    return path


def _fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]


def _agent_lists(sock: str) -> list[str]:
    proc = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True, check=False,
                          env={**os.environ, "SSH_AUTH_SOCK": sock})
    return [line.split()[1] for line in proc.stdout.splitlines() if line.strip()]


def _ssh_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("pybuild-ssh-*")}


def test_key_agents_serve_the_keys_and_stop(tmp_path: Path) -> None:
    one, two = _key(tmp_path / "one"), _key(tmp_path / "two")
    os.chmod(one, 0o644)  # too open for ssh-add itself: served anyway, as buildx serves it
    before = _ssh_dirs()
    req = BuildRequest(context=str(tmp_path), ssh=(
        SSHAgent(id="git", keys=(str(one), str(two))), SSHAgent(id="default")))
    with key_agents(req) as local:
        git, default = local.ssh
        assert (default.id, default.socket, default.keys) == ("default", "", ())
        assert git.keys == () and git.socket
        assert sorted(_agent_lists(git.socket)) == sorted([_fingerprint(one),
                                                           _fingerprint(two)])
        work = Path(git.socket).parent
        assert oct(work.stat().st_mode & 0o777) == "0o700"
        assert sorted(os.listdir(work)) == [Path(git.socket).name]  # key copies are gone
    assert not Path(git.socket).exists() and not work.exists()
    assert _ssh_dirs() == before
    assert _agent_lists(git.socket) == []


def test_key_agents_stop_on_failure(tmp_path: Path) -> None:
    key = _key(tmp_path / "k")
    req = BuildRequest(context=str(tmp_path), ssh=(SSHAgent(id="k", keys=(str(key),)),))
    with pytest.raises(KeyboardInterrupt), key_agents(req) as local:
        sock = local.ssh[0].socket
        assert _agent_lists(sock)
        raise KeyboardInterrupt
    assert not Path(sock).exists() and not Path(sock).parent.exists()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: _key(p, passphrase="s3cret"), "protected by a passphrase"),
    (lambda p: (p.write_text("not a key\n"), p)[1], "not a private key"),
])
def test_bad_keys_are_named(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path / "bad")
    before = _ssh_dirs()
    req = BuildRequest(context=str(tmp_path), ssh=(SSHAgent(id="x", keys=(str(path),)),))
    with pytest.raises(UserError) as err, key_agents(req):
        pass
    assert message in err.value.message and str(path) in err.value.message
    assert "s3cret" not in err.value.message
    assert _ssh_dirs() == before


def test_duplicate_ids(tmp_path: Path) -> None:
    key = _key(tmp_path / "k")
    req = BuildRequest(context=str(tmp_path), ssh=(SSHAgent(id="a", keys=(str(key),)),
                                                   SSHAgent(id="a", socket="/x")))
    with pytest.raises(UserError, match="duplicate agent ID 'a'"), key_agents(req):
        pass


def test_build_with_key_file(pybuild: PybuildRunner, tmp_path: Path) -> None:
    """The step sees an agent socket at the mount; nothing of the agent outlives the
    build (no process, no directory in TMPDIR)."""
    key = _key(tmp_path / "deploy")
    ctx = write_context(tmp_path / "ctx", "FROM busybox\n"
                        "RUN --mount=type=ssh,id=deploy test -S /run/buildkit/ssh_agent.0 "
                        "&& echo ok > /ok\n")
    r = pybuild("build", "--no-cache", "--ssh", f"deploy={key}", "-o",
                f"type=local,dest={tmp_path / 'out'}", str(ctx))
    assert r.code == 0, r.err
    assert (tmp_path / "out/ok").read_text() == "ok\n"
    assert not list(pybuild_tmpdir().glob("pybuild-ssh-*"))
    agents = subprocess.run(["pgrep", "-f", f"ssh-agent -D -a {pybuild_tmpdir()}"],
                            capture_output=True, text=True, check=False)
    assert agents.stdout == ""


def test_build_with_passphrase_key_is_one_line(pybuild: PybuildRunner, tmp_path: Path) -> None:
    key = _key(tmp_path / "locked", passphrase="s3cret")
    ctx = write_context(tmp_path / "ctx", "FROM busybox\nRUN --mount=type=ssh true\n")
    r = pybuild("build", "--ssh", f"default={key}", str(ctx))
    assert r.code == 1
    assert f"--ssh default={key}: the key is protected by a passphrase" in r.err
    assert "Traceback" not in r.err and "internal error" not in r.err


def test_optional_ssh_mount_without_ssh(pybuild: PybuildRunner, tmp_path: Path) -> None:
    """BuildKit skips an ssh mount that is not required when no agent has its id
    (`MountSSH`: `SSHOpt.Optional`); a required one fails naming the id."""
    ctx = write_context(tmp_path / "ctx", "FROM busybox\n"
                        "RUN --mount=type=ssh,required=false "
                        "test ! -e /run/buildkit/ssh_agent.0\n")
    r = pybuild("build", "--no-cache", str(ctx))
    assert r.code == 0, r.err
    ctx2 = write_context(tmp_path / "ctx2", "FROM busybox\n"
                         "RUN --mount=type=ssh,id=deploy,required=true true\n")
    r = pybuild("build", "--no-cache", str(ctx2))
    assert r.code == 1 and "deploy" in r.err

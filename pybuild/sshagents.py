"""`--ssh ID=KEYFILE[,KEYFILE...]`: private keys served by an ssh-agent of the build's own.

buildx loads key files into an in-process agent (BuildKit's `sshprovider.toDialer`:
each key parsed, at most 100 KiB, no passphrase prompt) and serves it for that id. Here
each id with keys gets an `ssh-agent` (Debian's openssh-client) listening in a private
temporary directory (0700), the keys are added with `ssh-add` (from copies made 0600 in
that directory, so a key file readable by others is served as buildx serves it instead
of being refused by ssh-add), and the request's agent for that id becomes that socket.
The agents are stopped and the directory removed when the build ends, however it ends
(an error, Ctrl-C, SIGTERM); an agent whose pybuild process is killed gets SIGTERM from
the kernel (`setpriv --pdeathsig`, util-linux).

A key protected by a passphrase is refused with a clear error, as buildx refuses it
("failed to parse"): nothing is ever prompted for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator

from pybuild.errors import UserError
from pybuild.request import BuildRequest, SSHAgent

MAX_KEY_SIZE = 100 * 1024  # sshprovider reads at most this much of a key file
_START_TIMEOUT = 10.0


def needs_agents(request: BuildRequest) -> bool:
    return any(a.keys for a in request.ssh)


@contextlib.contextmanager
def key_agents(request: BuildRequest) -> Iterator[BuildRequest]:
    """`request` with every `SSHAgent(keys=...)` replaced by the socket of a private
    ssh-agent holding those keys, for as long as the block runs."""
    if not needs_agents(request):
        yield request
        return
    _check_ids(request.ssh)
    tools = {name: shutil.which(name) for name in ("ssh-agent", "ssh-add", "ssh-keygen")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise UserError(f"--ssh with key files needs {', '.join(missing)} (openssh-client), "
                        "which is not installed", code="missing-tool",
                        hint="install openssh-client, or pass an agent socket: "
                             "--ssh ID=$SSH_AUTH_SOCK")
    with contextlib.ExitStack() as stack:
        work = tempfile.mkdtemp(prefix="pybuild-ssh-")
        stack.callback(shutil.rmtree, work, True)
        agents = []
        for n, agent in enumerate(request.ssh):
            if not agent.keys:
                agents.append(agent)
                continue
            keys = [_copy_key(agent.id, key, os.path.join(work, f"k{n}-{i}"))
                    for i, key in enumerate(agent.keys)]
            for key, copy in zip(agent.keys, keys, strict=True):
                _check_unencrypted(tools["ssh-keygen"] or "", agent.id, key, copy)
            sock = os.path.join(work, f"a{n}.sock")
            stack.enter_context(_agent(tools["ssh-agent"] or "", sock))
            for key, copy in zip(agent.keys, keys, strict=True):
                _add(tools["ssh-add"] or "", sock, agent.id, key, copy)
                os.unlink(copy)  # the agent holds it now
            agents.append(SSHAgent(id=agent.id, socket=sock))
        yield dataclasses.replace(request, ssh=tuple(agents))


def _check_ids(agents: tuple[SSHAgent, ...]) -> None:
    seen: set[str] = set()
    for a in agents:
        if a.id in seen:
            raise UserError(f"--ssh {a.id}: duplicate agent ID {a.id!r}", code="bad-flag")
        seen.add(a.id)


def _copy_key(sid: str, path: str, dest: str) -> str:
    """The key file, read as sshprovider reads it, written 0600 at `dest`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UserError(f"--ssh {sid}={path}: cannot read the key: {exc.strerror}",
                        code="bad-flag") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UserError(f"--ssh {sid}={path}: not an agent socket nor a key file",
                            code="bad-flag")
        data = f.read(MAX_KEY_SIZE)
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(out, "wb") as f:
        f.write(data)
    return dest


def _quiet_env(sock: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "DISPLAY"))}
    env["SSH_ASKPASS_REQUIRE"] = "never"  # never a prompt, on a terminal or elsewhere
    if sock:
        env["SSH_AUTH_SOCK"] = sock
    return env


def _check_unencrypted(keygen: str, sid: str, path: str, copy: str) -> None:
    """A key ssh-keygen cannot read with an empty passphrase is refused, by name."""
    proc = subprocess.run([keygen, "-y", "-P", "", "-f", copy], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, env=_quiet_env(),
                          start_new_session=True, check=False)
    if proc.returncode == 0:
        return
    why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unreadable"
    if "passphrase" in why:
        raise UserError(f"--ssh {sid}={path}: the key is protected by a passphrase, which "
                        "pybuild cannot ask for", code="bad-flag",
                        hint=f"load it into your agent (ssh-add {path}) and pass "
                             f"--ssh {sid}=$SSH_AUTH_SOCK")
    raise UserError(f"--ssh {sid}={path}: not a private key ({why.replace(copy, path)})",
                    code="bad-flag", hint="give an OpenSSH or PEM private key file, or an "
                                          "agent socket")


@contextlib.contextmanager
def _agent(binary: str, sock: str) -> Iterator[None]:
    """`ssh-agent -D -a SOCK` running for the block (in the foreground: this process is
    its parent and stops it)."""
    cmd = [binary, "-D", "-a", sock]
    setpriv = shutil.which("setpriv")  # util-linux: SIGTERM when this process dies
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_quiet_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _is_socket(sock):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise UserError(f"--ssh: ssh-agent did not start: {err or proc.returncode}")
            if time.monotonic() > deadline:
                raise UserError(f"--ssh: ssh-agent did not open its socket within "
                                f"{_START_TIMEOUT:g}s")
            time.sleep(0.01)
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _add(binary: str, sock: str, sid: str, path: str, copy: str) -> None:
    proc = subprocess.run([binary, "-q", copy], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=_quiet_env(sock),
                          start_new_session=True, check=False)
    if proc.returncode != 0:
        why = proc.stderr.strip().replace(copy, path) or f"exit status {proc.returncode}"
        raise UserError(f"--ssh {sid}={path}: ssh-add could not add the key: {why}",
                        code="bad-flag")

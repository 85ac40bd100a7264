"""`pybuild login` / `logout`, credential helpers and token auth, against real registries.

Logins are verified against the registry before anything is stored, and stored where docker
(or podman) keeps them: `auths` in config.json, the helper named by `credsStore` /
`credHelpers` (a test helper on PATH that logs its calls), podman's auth.json. What pybuild
stores is read back by skopeo (an independent reader of both formats). The TLS registry is
trusted through a certs.d directory only. No secret ever appears in pybuild's output.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.credential_helper import FakeHelper, install_helper
from tests.integration.conftest import REPO, Run
from tests.registry_fixture import (  # noqa: F401  (pytest fixtures)
    PASSWORD,
    USERNAME,
    RunningRegistry,
    auth_registry,
    token_registry,
)
from tests.tooling import require_tool


@dataclass
class Scratch:
    """A HOME with its own docker config, certs.d and PATH."""

    home: Path
    bin_dir: Path
    env: dict[str, str]

    @property
    def docker_config(self) -> Path:
        return self.home / ".docker" / "config.json"

    def config(self) -> dict[str, object]:
        value = json.loads(self.docker_config.read_text())
        assert isinstance(value, dict)
        return value

    def write_config(self, data: dict[str, object]) -> None:
        self.docker_config.parent.mkdir(parents=True, exist_ok=True)
        self.docker_config.write_text(json.dumps(data))


@pytest.fixture
def scratch(tmp_path: Path, auth_registry: RunningRegistry) -> Iterator[Scratch]:  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    certs = tmp_path / "certs.d" / auth_registry.host
    certs.mkdir(parents=True)
    assert auth_registry.ca_cert is not None
    (certs / "ca.crt").write_bytes(auth_registry.ca_cert.read_bytes())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
           "XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_CONFIG_HOME": str(home / ".config"),
           "REGISTRY_AUTH_FILE": "", "PYBUILD_CERTS_DIRS": str(tmp_path / "certs.d"),
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "PYBUILD_REGISTRY_RETRIES": "1"}
    yield Scratch(home=home, bin_dir=bin_dir, env=env)


def pybuild(root: Path, *args: str, env: dict[str, str], stdin: str = "") -> Run:
    full = dict(os.environ)
    full.pop("PYBUILD_ROOT", None)
    full["PYTHONPATH"] = str(REPO)
    full.update(env)
    proc = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(root), *args],
                          input=stdin, capture_output=True, text=True, env=full, timeout=300,
                          cwd=REPO)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def no_secrets(*runs: Run, secrets: tuple[str, ...] = (PASSWORD,)) -> None:
    for run in runs:
        for secret in secrets:
            assert secret not in run.out and secret not in run.err, "a secret was printed"


def skopeo_inspect(ref: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                           *extra, f"docker://{ref}"], capture_output=True, text=True,
                          env=full, timeout=60, check=False)


# --- auths in config.json ---------------------------------------------------------------


def test_login_stores_in_config_json_push_uses_it_logout_removes_it(
        fresh_root: Path, scratch: Scratch, auth_registry: RunningRegistry) -> None:  # noqa: F811
    host = auth_registry.host
    r = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", host,
                env=scratch.env, stdin=PASSWORD + "\n")
    assert r.code == 0, r.err
    assert "Login Succeeded" in r.out and "stored unencrypted" in r.err
    entry = scratch.config()["auths"][host]  # type: ignore[index]
    assert base64.b64decode(entry["auth"]).decode() == f"{USERNAME}:{PASSWORD}"
    assert scratch.docker_config.stat().st_mode & 0o077 == 0  # 0600
    ref = f"{host}/login/app:1"
    p = pybuild(fresh_root, "push", "busybox:latest", ref, env=scratch.env)
    assert p.code == 0, p.err
    # skopeo (containers/image) reads the docker config pybuild wrote
    seen = skopeo_inspect(ref, scratch.env)
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout)["mediaType"].endswith("index.v1+json")
    o = pybuild(fresh_root, "logout", host, env=scratch.env)
    assert o.code == 0 and f"Removing login credentials for {host}" in o.out
    assert host not in scratch.config()["auths"]  # type: ignore[operator]
    again = pybuild(fresh_root, "logout", host, env=scratch.env)
    assert again.code == 0 and f"Not logged in to {host}" in again.out
    denied = pybuild(fresh_root, "push", "busybox:latest", ref, env=scratch.env)
    assert denied.code == 1 and "authentication required" in denied.err
    no_secrets(r, p, o, again, denied)


def test_a_failed_login_stores_nothing(fresh_root: Path, scratch: Scratch,
                                       auth_registry: RunningRegistry) -> None:  # noqa: F811
    wrong = "not-the-password-7c1e"
    r = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", auth_registry.host,
                env=scratch.env, stdin=wrong)
    assert r.code == 1 and "login to" in r.err and "nothing was stored" in r.err
    assert not scratch.docker_config.exists()
    # an existing config is left byte for byte as it was
    scratch.write_config({"auths": {}, "psFormat": "table {{.ID}}"})
    before = scratch.docker_config.read_bytes()
    r2 = pybuild(fresh_root, "login", "-u", USERNAME, "-p", wrong, auth_registry.host,
                 env=scratch.env)
    assert r2.code == 1 and "--password via the CLI is insecure" in r2.err
    assert scratch.docker_config.read_bytes() == before
    no_secrets(r, r2, secrets=(wrong, PASSWORD))


def test_login_flag_errors_are_docker_s(fresh_root: Path, scratch: Scratch,
                                        auth_registry: RunningRegistry) -> None:  # noqa: F811
    host = auth_registry.host
    cases = [
        (["--password-stdin", host], "requires --username"),
        (["-u", USERNAME, "-p", "x", "--password-stdin", host], "conflicting options"),
        (["-u", "", "--password-stdin", host], "username is empty"),
        (["-u", USERNAME, host], "non-TTY"),
        (["-u", USERNAME, "--password-stdin", "bad host/x"], "invalid registry"),
    ]
    for args, message in cases:
        r = pybuild(fresh_root, "login", *args, env=scratch.env, stdin="")
        assert r.code == 1 and message in r.err, (args, r.err)
    assert not scratch.docker_config.exists()


def test_login_with_authfile_and_registry_auth_file_writes_podman_s_file(
        fresh_root: Path, scratch: Scratch, auth_registry: RunningRegistry,  # noqa: F811
        tmp_path: Path) -> None:
    host = auth_registry.host
    authfile = tmp_path / "podman-auth.json"
    env = dict(scratch.env, REGISTRY_AUTH_FILE=str(authfile))
    r = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", host, env=env,
                stdin=PASSWORD)
    assert r.code == 0, r.err
    assert not scratch.docker_config.exists()
    assert host in json.loads(authfile.read_text())["auths"]
    # podman's tools read it as theirs
    seen = skopeo_inspect(f"{host}/login/missing:1", scratch.env, "--authfile", str(authfile))
    assert "manifest unknown" in seen.stderr.lower() or "not found" in seen.stderr.lower(), \
        seen.stderr
    other = tmp_path / "explicit.json"
    r2 = pybuild(fresh_root, "login", "--authfile", str(other), "-u", USERNAME,
                 "--password-stdin", host, env=env, stdin=PASSWORD)
    assert r2.code == 0 and host in json.loads(other.read_text())["auths"]
    o = pybuild(fresh_root, "logout", "--authfile", str(other), host, env=env)
    assert o.code == 0 and host not in json.loads(other.read_text())["auths"]
    assert host in json.loads(authfile.read_text())["auths"]  # only that file


# --- credential helpers --------------------------------------------------------------------


@pytest.fixture
def helper(scratch: Scratch) -> FakeHelper:
    return install_helper(scratch.bin_dir, "pbtest")


def test_creds_store_helper_gets_the_login_and_serves_pulls(
        fresh_root: Path, scratch: Scratch, helper: FakeHelper,
        auth_registry: RunningRegistry) -> None:  # noqa: F811
    host = auth_registry.host
    scratch.write_config({"credsStore": "pbtest", "auths": {}})
    r = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", host,
                env=scratch.env, stdin=PASSWORD)
    assert r.code == 0, r.err
    assert "docker-credential-pbtest" in r.err and "unencrypted" not in r.err
    assert helper.keychain == {host: {"Username": USERNAME, "Secret": PASSWORD}}
    assert helper.calls == [f"store {host}"]
    # docker's layout: an empty entry beside the helper, no secret in the file
    assert scratch.config()["auths"] == {host: {}}
    assert PASSWORD not in scratch.docker_config.read_text()
    ref = f"{host}/helper/app:1"
    p = pybuild(fresh_root, "push", "busybox:latest", ref, env=scratch.env)
    assert p.code == 0, p.err
    assert f"get {host}" in helper.calls
    seen = skopeo_inspect(ref, scratch.env, "--creds", f"{USERNAME}:{PASSWORD}")
    assert seen.returncode == 0, seen.stderr
    # the list action of the protocol, as docker's GetAllCredentials calls it
    from pybuild.registry.credhelper import CredentialHelper

    listed = CredentialHelper(name="pbtest", search_path=scratch.env["PATH"]).list()
    assert listed == {host: USERNAME}
    o = pybuild(fresh_root, "logout", host, env=scratch.env)
    assert o.code == 0 and helper.calls[-1] == f"erase {host}" and helper.keychain == {}
    no_secrets(r, p, o)


def test_cred_helpers_entry_wins_over_creds_store(
        fresh_root: Path, scratch: Scratch, helper: FakeHelper,
        auth_registry: RunningRegistry) -> None:  # noqa: F811
    host = auth_registry.host
    other = install_helper(scratch.bin_dir, "other")
    scratch.write_config({"credsStore": "other", "credHelpers": {host: "pbtest"}})
    r = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", host,
                env=scratch.env, stdin=PASSWORD)
    assert r.code == 0, r.err
    assert helper.calls == [f"store {host}"] and other.calls == []
    p = pybuild(fresh_root, "pull", f"{host}/helper/none:1", env=scratch.env)
    assert p.code == 1 and "not found" in p.err, p.err  # authenticated, then not there
    assert helper.calls[-1] == f"get {host}" and other.calls == []


def test_a_missing_or_failing_helper_is_an_error_that_names_it(
        fresh_root: Path, scratch: Scratch, helper: FakeHelper,
        auth_registry: RunningRegistry) -> None:  # noqa: F811
    host = auth_registry.host
    scratch.write_config({"credsStore": "nope"})
    r = pybuild(fresh_root, "pull", f"{host}/helper/app:1", env=scratch.env)
    assert r.code == 1
    assert "docker-credential-nope" in r.err and "not installed" in r.err
    assert str(scratch.docker_config) in r.err
    scratch.write_config({"credsStore": "pbtest"})
    helper.fail()
    login = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", host,
                    env=scratch.env, stdin=PASSWORD)
    assert login.code == 1 and "docker-credential-pbtest" in login.err
    assert "failed to store credentials" in login.err
    pull = pybuild(fresh_root, "pull", f"{host}/helper/app:1", env=scratch.env)
    assert pull.code == 1 and "failed to get credentials" in pull.err
    assert "Traceback" not in login.err + pull.err
    no_secrets(login, pull)  # the helper echoed the secret; pybuild blanked it out


# --- token auth: identity tokens, the OAuth2 POST and its GET fallback ---------------------


def test_token_login_stores_an_identity_token_used_with_oauth2(
        fresh_root: Path, scratch: Scratch, token_registry: RunningRegistry) -> None:  # noqa: F811
    service = token_registry.token_service
    assert service is not None
    host = token_registry.host
    service.requests.clear()
    r = pybuild(fresh_root, "login", "-u", USERNAME, "--password-stdin", host,
                env=scratch.env, stdin=PASSWORD)
    assert r.code == 0, r.err
    assert "identity token" in r.err
    entry = scratch.config()["auths"][host]  # type: ignore[index]
    token = entry["identitytoken"]
    assert token in service.refresh_tokens
    assert base64.b64decode(entry["auth"]).decode() == f"{USERNAME}:"  # no password kept
    assert [(q.method, q.grant, q.offline) for q in service.requests] == [
        ("GET", "basic", True)]
    service.requests.clear()
    ref = f"{host}/tokens/app:1"
    p = pybuild(fresh_root, "push", "busybox:latest", ref, env=scratch.env)
    assert p.code == 0, p.err
    grants = {(q.method, q.grant) for q in service.requests}
    assert grants == {("POST", "refresh_token")}
    seen = skopeo_inspect(ref, scratch.env, "--creds", f"{USERNAME}:{PASSWORD}")
    assert seen.returncode == 0, seen.stderr
    assert all(q.user == USERNAME for q in service.requests)
    # a token service without the OAuth2 POST: the GET form, with the identity token
    service.post_supported = False
    service.requests.clear()
    try:
        p2 = pybuild(fresh_root, "push", "busybox:latest", f"{host}/tokens/app:2",
                     env=scratch.env)
        assert p2.code == 0, p2.err
        assert ("POST", "refresh_token") in {(q.method, q.grant) for q in service.requests}
        assert any(q.method == "GET" and q.user == USERNAME for q in service.requests)
    finally:
        service.post_supported = True
    no_secrets(r, p, p2, secrets=(PASSWORD, token))


def test_token_scopes_for_pull_push_and_cross_repository_mount(
        fresh_root: Path, scratch: Scratch, token_registry: RunningRegistry) -> None:  # noqa: F811
    service = token_registry.token_service
    assert service is not None
    host = token_registry.host
    creds = f"{USERNAME}:{PASSWORD}"
    p = pybuild(fresh_root, "push", "--creds", creds, "busybox:latest",
                f"{host}/private/base:1", env=scratch.env)
    assert p.code == 0, p.err
    service.requests.clear()
    # the second repository: every blob is mounted from the first, with a token for both
    m = pybuild(fresh_root, "push", "--creds", creds, "busybox:latest",
                f"{host}/private/copy:1", env=scratch.env)
    assert m.code == 0, m.err
    mount_scopes = [q.scopes for q in service.requests
                    if "repository:private/base:pull" in q.scopes]
    assert mount_scopes and all("repository:private/copy:pull,push" in s
                                for s in mount_scopes)
    # anonymous pulls of a private repository are refused; the user's succeed
    anon = pybuild(fresh_root.parent / "anon", "pull", f"{host}/private/copy:1",
                   env=scratch.env)
    assert anon.code == 1 and "authentication required" in anon.err
    ok = pybuild(fresh_root.parent / "user", "pull", "--creds", creds,
                 f"{host}/private/copy:1", env=scratch.env)
    assert ok.code == 0, ok.err
    no_secrets(p, m, anon, ok)

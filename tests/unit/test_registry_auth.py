"""Registry auth: WWW-Authenticate parsing, credentials, auth files, token responses."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pybuild.errors import UserError
from pybuild.registry.auth import (
    Challenge,
    Credentials,
    credentials_from_auth_data,
    normalize_auth_key,
    parse_www_authenticate,
    token_from_response,
)
from pybuild.registry.authfiles import auth_file_candidates, load_credentials


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- WWW-Authenticate --------------------------------------------------------------------


def test_basic_challenge() -> None:
    assert parse_www_authenticate('Basic realm="pybuild-realm"') == [
        Challenge("basic", {"realm": "pybuild-realm"})
    ]


def test_bearer_with_quoted_params_and_commas() -> None:
    header = ('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
              'scope="repository:flow/x:pull,push"')
    [challenge] = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example.com/token"
    assert challenge.service == "registry.example.com"
    assert challenge.scope == "repository:flow/x:pull,push"


def test_bearer_with_spaces_unquoted_values_and_escapes() -> None:
    header = 'bearer  realm = "https://a/t" , service=reg, error="insufficient_scope", x="a\\"b"'
    [challenge] = parse_www_authenticate(header)
    assert challenge.params == {"realm": "https://a/t", "service": "reg",
                                "error": "insufficient_scope", "x": 'a"b'}


def test_several_challenges_in_one_header() -> None:
    header = 'Basic realm="r1", Bearer realm="https://t/token",service="s",scope="a:b:pull,push"'
    challenges = parse_www_authenticate(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].realm == "r1"
    assert challenges[1].scope == "a:b:pull,push"


def test_token68_and_empty_headers() -> None:
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate("   ") == []
    [neg] = parse_www_authenticate("Negotiate abc123==")
    assert neg.scheme == "negotiate"
    [bare] = parse_www_authenticate("Basic")
    assert bare == Challenge("basic", {})


def test_unterminated_quote_does_not_crash() -> None:
    [challenge] = parse_www_authenticate('Bearer realm="https://a/token')
    assert challenge.realm == "https://a/token"


# --- credentials -------------------------------------------------------------------------


def test_credentials_parse_and_repr_hides_password() -> None:
    creds = Credentials.parse("user:pa:ss")
    assert (creds.username, creds.password) == ("user", "pa:ss")
    assert "pa:ss" not in repr(creds) and "pa:ss" not in str(creds)
    assert creds.basic_header() == "Basic " + b64("user:pa:ss")
    with pytest.raises(UserError):
        Credentials.parse(":nouser")


def test_normalize_auth_key() -> None:
    assert normalize_auth_key("https://index.docker.io/v1/") == "docker.io"
    assert normalize_auth_key("registry-1.docker.io") == "docker.io"
    assert normalize_auth_key("http://localhost:5000") == "localhost:5000"
    assert normalize_auth_key("https://quay.io/v2/") == "quay.io"
    assert normalize_auth_key("quay.io/team/app") == "quay.io/team/app"
    assert normalize_auth_key("127.0.0.1:5000/") == "127.0.0.1:5000"


def test_auth_data_most_specific_key_wins() -> None:
    data = {"auths": {
        "quay.io": {"auth": b64("generic:one")},
        "quay.io/team": {"auth": b64("team:two")},
        "https://index.docker.io/v1/": {"auth": b64("hub:three")},
        "127.0.0.1:5000": {"username": "u", "password": "p"},
    }}
    assert credentials_from_auth_data(data, "quay.io", "team/app") == Credentials("team", "two")
    assert credentials_from_auth_data(data, "quay.io", "other/app") == Credentials(
        "generic", "one")
    assert credentials_from_auth_data(data, "docker.io", "library/busybox") == Credentials(
        "hub", "three")
    assert credentials_from_auth_data(data, "127.0.0.1:5000", "x") == Credentials("u", "p")
    assert credentials_from_auth_data(data, "ghcr.io", "x") is None


def test_auth_data_errors_do_not_echo_secrets() -> None:
    with pytest.raises(UserError) as err:
        credentials_from_auth_data({"auths": {"r.io": {"auth": "!!!not base64"}}}, "r.io")
    assert "!!!" not in str(err.value)
    with pytest.raises(UserError):
        credentials_from_auth_data({"auths": {"r.io": {"auth": b64("nocolon")}}}, "r.io")
    with pytest.raises(UserError):
        credentials_from_auth_data([], "r.io")


def test_auth_file_lookup_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "REGISTRY_AUTH_FILE": str(tmp_path / "explicit.json"),
           "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    files = auth_file_candidates(env)
    assert files == [
        tmp_path / "explicit.json",
        tmp_path / "run" / "containers" / "auth.json",
        tmp_path / "home" / ".config" / "containers" / "auth.json",
        tmp_path / "home" / ".docker" / "config.json",
    ]
    docker = tmp_path / "home" / ".docker" / "config.json"
    docker.parent.mkdir(parents=True)
    docker.write_text(json.dumps({"auths": {"r.io": {"auth": b64("docker:pw")}}}))
    assert load_credentials("r.io", "a", env=env) == Credentials("docker", "pw")
    runtime = tmp_path / "run" / "containers" / "auth.json"
    runtime.parent.mkdir(parents=True)
    runtime.write_text(json.dumps({"auths": {"r.io": {"auth": b64("podman:pw")}}}))
    assert load_credentials("r.io", "a", env=env) == Credentials("podman", "pw")
    # a file without an entry for the registry is passed over
    (tmp_path / "explicit.json").write_text(json.dumps({"auths": {"other.io": {}}}))
    assert load_credentials("r.io", "a", env=env) == Credentials("podman", "pw")
    assert load_credentials("nothing.io", "a", env=env) is None


def test_broken_auth_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "auth.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_credentials("r.io", auth_files=[bad])


def test_token_response() -> None:
    tok = token_from_response({"token": "abc", "expires_in": 300}, now=1000.0)
    assert tok is not None and tok.value == "abc"
    assert tok.valid(1200.0) and not tok.valid(1300.0)
    oauth = token_from_response({"access_token": "xyz"}, now=0.0)
    assert oauth is not None and oauth.value == "xyz" and oauth.valid(40.0)
    assert token_from_response({"nothing": 1}) is None
    assert token_from_response("token") is None

"""Docker credential helpers: `docker-credential-<name> get|store|erase|list`.

The protocol of docker/docker-credential-helpers (`client/client.go`): the action is the only
argument; `get` and `erase` read the server URL on stdin, `store` reads
`{"ServerURL", "Username", "Secret"}`, `list` reads anything and prints `{url: username}`.
`get` prints `{"ServerURL", "Username", "Secret"}`; a username of `<token>` means the secret
is an identity (refresh) token. A helper that does not know the server exits non-zero and
prints `credentials not found in native keychain`.

A missing or failing helper is an error naming it (and the config file that named it); its
output is quoted with every secret it was given or returned blanked out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from pybuild.errors import UserError

PREFIX = "docker-credential-"
TOKEN_USERNAME = "<token>"  # docker's marker for an identity token in a helper
NOT_FOUND = "credentials not found in native keychain"
HELPER_TIMEOUT = 60.0


class CredentialHelperError(UserError):
    """A credential helper is missing, failed, or answered something unreadable."""

    code = "credential-helper"


@dataclass(frozen=True, slots=True, kw_only=True)
class HelperCredentials:
    server_url: str
    username: str
    secret: str = ""

    def __repr__(self) -> str:  # never show the secret
        return f"HelperCredentials(server_url={self.server_url!r}, username={self.username!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialHelper:
    """One `docker-credential-<name>` program; `origin` says where it was configured (for
    messages), `search_path` is the PATH to find it on (None: this process's)."""

    name: str
    origin: str = ""
    search_path: str | None = None

    @property
    def program(self) -> str:
        return PREFIX + self.name

    def _where(self) -> str:
        return f"credential helper {self.program}" + (
            f" ({self.origin})" if self.origin else "")

    def _run(self, action: str, data: str, secrets: tuple[str, ...] = ()) -> tuple[int, str]:
        exe = shutil.which(self.program, path=self.search_path)
        if exe is None:
            raise CredentialHelperError(
                f"{self._where()} is not installed: {self.program} is not on PATH",
                hint=f"install {self.program}, or remove it from the docker config")
        env = dict(os.environ)
        if self.search_path is not None:
            env["PATH"] = self.search_path
        try:
            proc = subprocess.run([exe, action], input=data.encode(), capture_output=True,
                                  timeout=HELPER_TIMEOUT, check=False, env=env)
        except subprocess.TimeoutExpired:
            raise CredentialHelperError(
                f"{self._where()} did not answer `{action}` within {HELPER_TIMEOUT:g} s"
            ) from None
        except OSError as exc:
            raise CredentialHelperError(
                f"{self._where()} could not be run: {exc.strerror}") from None
        out = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            # docker reads the helper's message from stdout; some helpers use stderr
            err = proc.stderr.decode("utf-8", "replace")
            return proc.returncode, _redact((out.strip() or err.strip()), secrets)
        return 0, out

    def _failed(self, action: str, server: str, message: str) -> CredentialHelperError:
        detail = f": {message[:300]}" if message else ""
        target = f" for {server}" if server else ""
        return CredentialHelperError(f"{self._where()} failed to {action} credentials"
                                     f"{target}{detail}")

    def get(self, server_url: str) -> HelperCredentials | None:
        """The stored credentials for `server_url`, None if the helper has none."""
        code, out = self._run("get", server_url)
        if code != 0:
            if out.strip() == NOT_FOUND:
                return None
            raise self._failed("get", server_url, out)
        try:
            data = json.loads(out)
        except ValueError:
            raise CredentialHelperError(
                f"{self._where()} answered `get` for {server_url} with something that is "
                "not JSON") from None
        if not isinstance(data, dict):
            raise CredentialHelperError(f"{self._where()} answered `get` for {server_url} "
                                        "with something that is not a JSON object")
        username, secret = data.get("Username", ""), data.get("Secret", "")
        if not isinstance(username, str) or not isinstance(secret, str):
            raise CredentialHelperError(f"{self._where()} answered `get` for {server_url} "
                                        "with a non-string Username or Secret")
        if not username and not secret:
            return None
        return HelperCredentials(server_url=server_url, username=username, secret=secret)

    def store(self, creds: HelperCredentials) -> None:
        payload = json.dumps({"ServerURL": creds.server_url, "Username": creds.username,
                              "Secret": creds.secret})
        code, out = self._run("store", payload, secrets=(creds.secret,))
        if code != 0:
            raise self._failed("store", creds.server_url, out)

    def erase(self, server_url: str) -> bool:
        """Forget `server_url`; False if the helper had nothing for it."""
        code, out = self._run("erase", server_url)
        if code != 0:
            if out.strip() == NOT_FOUND:
                return False
            raise self._failed("erase", server_url, out)
        return True

    def list(self) -> dict[str, str]:
        """server URL -> username, for every server the helper knows."""
        code, out = self._run("list", "unused")
        if code != 0:
            raise self._failed("list", "", out)
        try:
            data = json.loads(out or "{}")
        except ValueError:
            raise CredentialHelperError(
                f"{self._where()} answered `list` with something that is not JSON") from None
        if not isinstance(data, dict):
            raise CredentialHelperError(f"{self._where()} answered `list` with something "
                                        "that is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text

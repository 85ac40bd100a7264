"""Where credentials live: docker's config.json and podman's auth.json, and the credential
helpers they name.

Lookup (`lookup_credentials`), file by file in `AuthLocations.read` order (podman's
`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
`~/.config/containers/auth.json`, then docker's `$DOCKER_CONFIG/config.json` or
`~/.docker/config.json`): a `credHelpers` entry for the registry, else `credsStore`, is asked
(`docker-credential-<name> get`); otherwise the file's `auths` entries are read. As in docker's
`configfile.GetCredentialsStore`, a configured helper replaces the file's own `auths` entry
for that registry.

A login (`store_credentials`) goes where docker's would: into the helper when one is
configured for the registry (the file then gets an empty `auths` entry, as docker writes),
else into `auths` of the file in use (`AuthLocations.write`: `--authfile`, else
`$REGISTRY_AUTH_FILE` as podman login does, else the docker config if it exists, else an
existing podman auth.json, else a new docker config). Files are rewritten atomically
(temporary file + rename, 0600, under a lock), keeping every key pybuild does not know.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pybuild.errors import UserError
from pybuild.registry.auth import (
    DOCKER_HUB_ALIASES,
    Credentials,
    credentials_from_auth_data,
    normalize_auth_key,
)
from pybuild.registry.credhelper import TOKEN_USERNAME, CredentialHelper, HelperCredentials
from pybuild.registry.locations import AuthLocations, auth_file_candidates

DOCKER_HUB_SERVER = "https://index.docker.io/v1/"  # docker's key for Docker Hub


def server_key(domain: str) -> str:
    """The key docker stores a registry's credentials under (`getAuthConfigKey`)."""
    return DOCKER_HUB_SERVER if domain in DOCKER_HUB_ALIASES else domain


def read_auth_file(path: Path) -> dict[str, Any] | None:
    """The parsed file, None if it does not exist or is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise UserError(f"auth file {path} is a directory", code="bad-auth-file") from None
    except OSError as exc:
        raise UserError(f"cannot read auth file {path}: {exc.strerror}",
                        code="bad-auth-file") from None
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"auth file {path} is not valid JSON ({exc})",
                        code="bad-auth-file") from None
    if not isinstance(data, dict):
        raise UserError(f"auth file {path}: not a JSON object", code="bad-auth-file")
    return data


def configured_helper(data: Mapping[str, Any], domain: str, path: Path,
                      search_path: str | None) -> CredentialHelper | None:
    """The helper `data` names for `domain`: its `credHelpers` entry, else `credsStore`."""
    helpers = data.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise UserError(f"auth file {path}: \"credHelpers\" is not an object",
                        code="bad-auth-file")
    wanted = {server_key(domain), domain, normalize_auth_key(domain)}
    for key, name in helpers.items():
        if (key in wanted or normalize_auth_key(str(key)) in wanted) and name:
            return CredentialHelper(name=str(name), origin=f"credHelpers in {path}",
                                    search_path=search_path)
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        return CredentialHelper(name=store, origin=f"credsStore in {path}",
                                search_path=search_path)
    return None


def _from_helper(found: HelperCredentials) -> Credentials:
    if found.username == TOKEN_USERNAME:
        return Credentials("", "", found.secret)
    return Credentials(found.username, found.secret)


def lookup_credentials(domain: str, repository: str, locations: AuthLocations
                       ) -> Credentials | None:
    """Credentials for `domain/repository` from the first file (or its helper) that has them."""
    for path in locations.read:
        data = read_auth_file(path)
        if data is None:
            continue
        helper = configured_helper(data, domain, path, locations.search_path)
        if helper is not None:
            found = helper.get(server_key(domain))
            if found is not None:
                return _from_helper(found)
            continue
        creds = credentials_from_auth_data(data, domain, repository,
                                           where=f"auth file {path}")
        if creds is not None:
            return creds
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` itself (created 0600 if missing), held until the
    replacement is renamed over it; a writer that locked a file just replaced retries."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            os.close(fd)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent="\t") + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            st = os.stat(path)
            os.chmod(tmp, st.st_mode & 0o777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _update_file(path: Path, change: Any) -> bool:
    """Apply `change(data) -> bool` (True: changed) to the file under its lock."""
    target = Path(os.path.realpath(path))  # a symlinked config stays a symlink
    with _locked(target):
        data = read_auth_file(target) or {}
        if not change(data):
            return False
        _write_json(target, data)
        return True


def _auths(data: dict[str, Any], path: Path) -> dict[str, Any]:
    auths = data.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise UserError(f"auth file {path}: \"auths\" is not an object", code="bad-auth-file")
    return auths


def _matching_keys(auths: Mapping[str, Any], key: str) -> list[str]:
    wanted = normalize_auth_key(key)
    return [k for k in auths if normalize_auth_key(str(k)) == wanted]


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """Where a login went: the file, and the helper if one holds the secret."""

    path: Path
    helper: str = ""

    def describe(self) -> str:
        return (f"credential helper docker-credential-{self.helper} (configured in "
                f"{self.path})" if self.helper else str(self.path))


def _entry_key(domain: str, repository: str, path: Path, helper: bool) -> str:
    if repository:
        if helper:
            raise UserError(f"a credential helper stores credentials per registry, not per "
                            f"repository: log in to {domain}, not {domain}/{repository}",
                            code="bad-login")
        return f"{domain}/{repository}"
    return server_key(domain)


def store_credentials(domain: str, creds: Credentials, locations: AuthLocations, *,
                      repository: str = "") -> Stored:
    """Save a verified login for `domain` (or, in an auth file, `domain/repository`)."""
    path = locations.write
    data = read_auth_file(path) or {}
    helper = configured_helper(data, domain, path, locations.search_path)
    key = _entry_key(domain, repository, path, helper is not None)
    if helper is not None:
        secret_user = TOKEN_USERNAME if creds.identity_token else creds.username
        helper.store(HelperCredentials(server_url=key, username=secret_user,
                                       secret=creds.identity_token or creds.password))

    def change(data: dict[str, Any]) -> bool:
        auths = _auths(data, path)
        for old in _matching_keys(auths, key):
            if old != key:
                del auths[old]
        if helper is not None:
            entry: dict[str, Any] = {}  # docker keeps an empty entry beside a helper
        else:
            password = "" if creds.identity_token else creds.password
            raw = f"{creds.username}:{password}".encode()
            entry = {"auth": base64.b64encode(raw).decode("ascii")}
            if creds.identity_token:
                entry["identitytoken"] = creds.identity_token
        if auths.get(key) == entry:
            return False
        auths[key] = entry
        return True

    _update_file(path, change)
    return Stored(path=path, helper=helper.name if helper is not None else "")


def stored_credentials(domain: str, locations: AuthLocations, *,
                       repository: str = "") -> Credentials | None:
    """What a login for `domain` stored (the write file and its helper only)."""
    path = locations.write
    data = read_auth_file(path)
    if data is None:
        return None
    helper = configured_helper(data, domain, path, locations.search_path)
    if helper is not None:
        found = helper.get(server_key(domain))
        return _from_helper(found) if found is not None else None
    return credentials_from_auth_data(data, domain, repository, where=f"auth file {path}")


def erase_credentials(domain: str, locations: AuthLocations, *,
                      repository: str = "") -> list[str]:
    """Forget the login for `domain` in the helper and in every auth file that has an entry
    for it; returns where something was removed (empty: was not logged in)."""
    removed: list[str] = []
    key = f"{domain}/{repository}" if repository else server_key(domain)
    files = [locations.write, *(p for p in locations.read if p != locations.write)]
    for path in files:
        data = read_auth_file(path)
        if data is None:
            continue
        helper = configured_helper(data, domain, path, locations.search_path)
        if helper is not None and not repository and helper.erase(key):
            removed.append(f"credential helper docker-credential-{helper.name}")

        def change(data: dict[str, Any], path: Path = path) -> bool:
            auths = data.get("auths")
            if not isinstance(auths, dict):
                return False
            keys = _matching_keys(auths, key)
            for k in keys:
                del auths[k]
            return bool(keys)

        if _update_file(path, change):
            removed.append(str(path))
    return removed


def load_credentials(domain: str, path: str = "", *, auth_files: Sequence[Path] | None = None,
                     env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for `domain/path` from the standard files (or these), helpers included."""
    env = os.environ if env is None else env
    files = tuple(auth_file_candidates(env)) if auth_files is None else tuple(auth_files)
    return lookup_credentials(domain, path, AuthLocations(
        read=files, write=files[0] if files else Path(os.devnull), search_path=env.get("PATH")))

"""Registry authentication: WWW-Authenticate challenges, credentials, "auths" entries, tokens.

The files that hold credentials (and the credential helpers they name) are `authfiles.py`'s;
this module reads one parsed file's "auths": the most specific key (`host/namespace/repo`
before `host`) wins, docker's `https://index.docker.io/v1/` keys count as `docker.io`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pybuild.errors import UserError

DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: scheme (lower case) + parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in ' \t,="':
        i += 1
    return text[start:i], i


def _quoted(text: str, i: int) -> tuple[str, int]:
    """A quoted-string starting at text[i] == '"' (backslash escapes); tolerates no end."""
    out = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges of a WWW-Authenticate value (RFC 7235), in order.

    `Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push"` gives one
    Bearer challenge with three parameters (the comma inside the quoted scope stays); a header
    carrying `Basic realm="r", Bearer realm="t"` gives two challenges.
    """
    challenges: list[Challenge] = []
    scheme = ""
    params: dict[str, str] = {}
    i = 0
    n = len(header)
    while i < n:
        i = _skip_ws(header, i)
        if i >= n:
            break
        if header[i] == ",":
            i += 1
            continue
        word, j = _token(header, i)
        if not word:  # stray quote or '='
            i = j + 1
            continue
        k = _skip_ws(header, j)
        if k < n and header[k] == "=" and scheme:
            # maybe name=value, or a token68 ending in '=' padding ("abc==")
            v = _skip_ws(header, k + 1)
            if v < n and header[v] == '"':
                value, i = _quoted(header, v)
                params[word.lower()] = value
                continue
            value, end = _token(header, v)
            if value:
                params[word.lower()] = value
                i = end
                continue
            # token68 with padding: keep it as the challenge's token
            while k < n and header[k] == "=":
                k += 1
            params.setdefault("token68", header[i:k])
            i = k
            continue
        # a new challenge starts with a bare token
        if scheme:
            challenges.append(Challenge(scheme, params))
        scheme, params = word.lower(), {}
        i = j
    if scheme:
        challenges.append(Challenge(scheme, params))
    return challenges


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name with a password, or an identity (refresh) token for the OAuth2 flow
    (docker's `identitytoken`; the user name may then be empty)."""

    username: str
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def __repr__(self) -> str:  # never show the secret
        kind = "identity_token" if self.identity_token else "password"
        return f"Credentials(username={self.username!r}, {kind}=***)"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values, for blanking them out of any text that might echo them."""
        return tuple(s for s in (self.password, self.identity_token) if s)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @property
    def has_basic(self) -> bool:
        return bool(self.username) and bool(self.password)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """`user:pass` (the password may hold colons; `user` alone means an empty password)."""
        user, _, password = text.partition(":")
        if not user:
            raise UserError("invalid credentials: expected USERNAME:PASSWORD",
                            code="bad-credentials")
        return cls(user, password)


def normalize_auth_key(key: str) -> str:
    """An "auths" key as `host[/path]`: scheme and docker's `/v1/`, `/v2/` suffixes dropped,
    Docker Hub's aliases folded into `docker.io`."""
    key = key.strip()
    had_scheme = False
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key, had_scheme = key[len(prefix):], True
            break
    key = key.rstrip("/")
    if had_scheme:
        # docker writes URLs ("https://index.docker.io/v1/"): only the host counts
        key = key.split("/", 1)[0]
    else:
        for suffix in ("/v1", "/v2"):
            key = key.removesuffix(suffix)
    host, sep, rest = key.partition("/")
    if host in DOCKER_HUB_ALIASES:
        host = "docker.io"
    return host + sep + rest


def _lookup_keys(domain: str, path: str) -> list[str]:
    """`domain/a/b`, `domain/a`, `domain`: most specific first."""
    if domain in DOCKER_HUB_ALIASES:
        domain = "docker.io"
    parts = path.split("/") if path else []
    keys = [domain + "/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    keys.append(domain)
    return keys


def _identity_token(entry: dict[str, object]) -> str:
    token = entry.get("identitytoken")
    return token if isinstance(token, str) else ""


def _decode_entry(entry: object, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise UserError(f"{where}: an \"auth\" entry is not valid base64 of user:password",
                            code="bad-auth-file") from None
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise UserError(f"{where}: an \"auth\" entry does not decode to user:password",
                            code="bad-auth-file")
        return Credentials(user, password.strip("\x00"), _identity_token(entry))
    token = _identity_token(entry)
    if token:
        name = entry.get("username")
        return Credentials(name if isinstance(name, str) else "", "", token)
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and username and isinstance(secret, str):
        return Credentials(username, secret, _identity_token(entry))
    return None


def credentials_from_auth_data(data: object, domain: str, path: str = "",
                               *, where: str = "auth file") -> Credentials | None:
    """The credentials an auth file's parsed JSON holds for `domain/path`, or None."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: not a JSON object", code="bad-auth-file")
    auths = data.get("auths") or {}
    if not isinstance(auths, dict):
        raise UserError(f"{where}: \"auths\" is not an object", code="bad-auth-file")
    normalized: dict[str, object] = {}
    for key, entry in auths.items():
        normalized.setdefault(normalize_auth_key(str(key)), entry)
    for key in _lookup_keys(domain, path):
        if key in normalized:
            creds = _decode_entry(normalized[key], where)
            if creds is not None:
                return creds
    return None


@dataclass(slots=True)
class Token:
    value: str = field(repr=False)
    expires_at: float
    refresh_token: str = field(default="", repr=False)  # OAuth2: a new identity token

    def valid(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.expires_at


def token_from_response(data: object, *, now: float | None = None) -> Token | None:
    """A bearer token from a token endpoint's JSON (`token` or `access_token`, `expires_in`)."""
    if not isinstance(data, dict):
        return None
    value = data.get("access_token") or data.get("token")
    if not isinstance(value, str) or not value:
        return None
    refresh = data.get("refresh_token")
    expires_in = data.get("expires_in")
    if not isinstance(expires_in, int | float) or expires_in <= 0:
        expires_in = 60  # the distribution spec's default
    start = time.monotonic() if now is None else now
    # renew a little early so a token never expires in flight
    return Token(value, start + max(1.0, float(expires_in) - 10.0),
                 refresh if isinstance(refresh, str) else "")


def repository_scope(path: str, actions: str) -> str:
    return f"repository:{path}:{actions}"

"""`login` and `logout`: credentials verified against the registry, then stored where docker
(or podman) keeps them (`authfiles.py`).

A login is checked before anything is stored, as docker's `loginV2` does: `GET /v2/` without
credentials; a Basic challenge is answered with the credentials, a Bearer challenge by
fetching a token from its realm with them (with `offline_token=true`, so a token service that
hands out refresh tokens gives one) and sending it to `/v2/`. A registry that answers 200
without asking for anything is a successful login too (docker says the same). When the token
service returned a refresh token, that identity token is stored instead of the password.
A failed login stores nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pybuild.errors import UserError
from pybuild.oci.reference import Reference
from pybuild.registry.auth import DOCKER_HUB_ALIASES, Credentials
from pybuild.registry.authfiles import Stored, erase_credentials, store_credentials
from pybuild.registry.client import RegistryClient
from pybuild.registry.errors import RegistryAuthError, RegistryError
from pybuild.registry.locations import AuthLocations
from pybuild.registry.options import RegistryOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginTarget:
    """What a login is for: a registry, or (podman) a namespace or repository in it."""

    domain: str
    repository: str = ""

    @classmethod
    def parse(cls, text: str) -> LoginTarget:
        """`""` / `docker.io` / `https://index.docker.io/v1/` / `host[:port][/path]`."""
        value = text.strip()
        for scheme in ("https://", "http://"):
            value = value.removeprefix(scheme)
        value = value.rstrip("/")
        for suffix in ("/v1", "/v2"):
            value = value.removesuffix(suffix)
        if not value:
            return cls(domain="docker.io")
        host, _, path = value.partition("/")
        if host in DOCKER_HUB_ALIASES:
            host = "docker.io"
        try:
            Reference.parse(f"{host}/{path or 'x'}")  # host and path syntax
        except UserError:
            raise UserError(f"invalid registry {text!r}: expected HOST[:PORT][/NAMESPACE]",
                            code="bad-login") from None
        return cls(domain=host, repository=path)

    def __str__(self) -> str:
        return f"{self.domain}/{self.repository}" if self.repository else self.domain


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginResult:
    stored: Stored
    identity_token: bool = False  # a refresh token was stored instead of the password
    anonymous: bool = False  # the registry asked for no credentials at all


async def verify_login(target: LoginTarget, creds: Credentials,
                       options: RegistryOptions | None = None) -> tuple[Credentials, bool]:
    """Check `creds` against the registry's `/v2/` challenge; returns what to store (with an
    identity token if the token service gave one) and whether the registry is anonymous."""
    base = dataclasses.replace(options or RegistryOptions(), creds=None)
    async with RegistryClient(target.domain, base) as client:
        client.use_credentials(creds)
        resp, challenges = await client.ping()
        if resp.status_code == 200:
            return creds, True
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        if bearer is not None:
            token = await client.fetch_token(bearer, [], creds, target.repository,
                                             offline=True)
            check = await client.get_with_header("/v2/", f"Bearer {token.value}")
            await check.aclose()
            if check.status_code != 200:
                raise _denied(target, creds, check.status_code)
            if token.refresh_token:
                return Credentials(creds.username, "", token.refresh_token), False
            return creds, False
        if any(c.scheme == "basic" for c in challenges):
            if not creds.has_basic:
                raise _denied(target, creds, 401)
            check = await client.get_with_header("/v2/", creds.basic_header())
            await check.aclose()
            if check.status_code != 200:
                raise _denied(target, creds, check.status_code)
            return creds, False
        raise RegistryError(f"{target.domain} answered 401 to /v2/ without a Basic or Bearer "
                            "challenge; pybuild cannot log in to it", registry=target.domain)


def _denied(target: LoginTarget, creds: Credentials, status: int) -> RegistryAuthError:
    who = f"user {creds.username!r}" if creds.username else "the identity token"
    return RegistryAuthError(
        f"login to {target} failed: the registry refused the credentials of {who} "
        f"(HTTP {status}); nothing was stored", registry=target.domain, status=status,
        hint="check the user name and password (or token)")


async def login(target: LoginTarget, creds: Credentials, locations: AuthLocations,
                options: RegistryOptions | None = None) -> LoginResult:
    """Verify, then store. Nothing is written when the registry refuses."""
    verified, anonymous = await verify_login(target, creds, options)
    stored = store_credentials(target.domain, verified, locations,
                               repository=target.repository)
    return LoginResult(stored=stored, identity_token=bool(verified.identity_token)
                       and not creds.identity_token, anonymous=anonymous)


def logout(target: LoginTarget, locations: AuthLocations) -> list[str]:
    """Forget the login everywhere it is stored; returns where (empty: none was)."""
    return erase_credentials(target.domain, locations, repository=target.repository)

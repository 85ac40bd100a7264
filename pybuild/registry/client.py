"""One registry host: scheme choice, TLS, authentication (Basic, Bearer tokens), errors.

`RegistryClient` speaks HTTP to one registry (a reference's domain; `docker.io` is served by
`registry-1.docker.io`) and turns every failure into a typed `RegistryError`. Plain HTTP is
only used for loopback hosts (`localhost`, 127.0.0.0/8, ::1) or with `insecure=True`, and
only after an HTTPS attempt found no TLS server there; with `insecure=True` certificates are
not verified either (docker's `--insecure-registry`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pybuild.errors import UserError
from pybuild.registry.auth import (
    Challenge,
    Credentials,
    Token,
    load_credentials,
    parse_www_authenticate,
    token_from_response,
)
from pybuild.registry.errors import (
    ManifestBlobUnknownError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTLSError,
    RegistryUnreachableError,
    describe_errors,
    parse_error_body,
)

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
USER_AGENT = "pybuild/0.1"
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN",
                              "BLOB_UPLOAD_UNKNOWN"})
_AUTH_HINT = ("give credentials with --creds USER:PASSWORD, or log in with `podman login` / "
              "`docker login` (pybuild reads $REGISTRY_AUTH_FILE, "
              "$XDG_RUNTIME_DIR/containers/auth.json and ~/.docker/config.json)")

BodyFactory = Callable[[], "bytes | AsyncIterator[bytes]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryOptions:
    """How to reach and authenticate to registries (one value for a whole pull or push)."""

    creds: str | None = field(default=None, repr=False)  # "user:password" (--creds)
    auth_files: tuple[Path, ...] | None = None  # None: the standard lookup (see auth.py)
    insecure: bool = False  # allow plain HTTP and unverified TLS (--insecure)
    ca_cert: Path | None = None  # extra CA bundle (PEM) to trust
    max_transfers: int = 4  # concurrent blob uploads/downloads
    chunk_size: int = 16 << 20  # blobs larger than this are pushed in PATCH chunks this big
    timeout: float = 120.0  # seconds without progress on one request


def api_host(domain: str) -> str:
    """The host:port whose /v2/ API serves a reference's domain."""
    return DOCKER_HUB_API_HOST if domain == DOCKER_HUB_DOMAIN else domain


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 and ::1, with or without a port."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def ssl_context(options: RegistryOptions) -> ssl.SSLContext:
    """System trust (plus $SSL_CERT_FILE) plus the optional CA file; none when insecure."""
    if options.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()  # honours $SSL_CERT_FILE / $SSL_CERT_DIR
    if options.ca_cert is not None:
        try:
            ctx.load_verify_locations(cafile=str(options.ca_cert))
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot load the CA file {options.ca_cert}: {exc}",
                            code="bad-ca-file") from None
    return ctx


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def resolve_location(request_url: httpx.URL | str, location: str) -> httpx.URL:
    """An upload `Location` (absolute, or relative to the request) as an absolute URL."""
    if not location:
        raise RegistryError("the registry sent no Location for the upload")
    return httpx.URL(str(request_url)).join(location)


def with_digest(url: httpx.URL, digest: str) -> httpx.URL:
    """The upload URL with `digest=` added, keeping its `_state` and other parameters."""
    return url.copy_add_param("digest", digest)


class RegistryClient:
    """HTTP to one registry; use as `async with RegistryClient(domain, options) as c:`."""

    def __init__(self, domain: str, options: RegistryOptions | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.domain = domain
        self.options = options or RegistryOptions()
        self.host = api_host(domain)
        self.loopback = is_loopback(self.host)
        self._scheme: str | None = None
        self._scheme_lock = asyncio.Lock()
        self._token_lock = asyncio.Lock()
        self._tokens: dict[str, Token] = {}
        self._basic = False  # the registry asked for Basic: send it on every request
        self.transfers = asyncio.Semaphore(max(1, self.options.max_transfers))
        self._creds_cache: dict[str, Credentials | None] = {}
        self._client = httpx.AsyncClient(
            verify=ssl_context(self.options),
            timeout=httpx.Timeout(self.options.timeout, connect=min(30.0, self.options.timeout)),
            limits=httpx.Limits(max_connections=max(4, self.options.max_transfers * 2)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            trust_env=not self.loopback,  # never send loopback traffic through a proxy
            transport=transport,  # tests plug in an httpx.MockTransport
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- URLs --------------------------------------------------------------------------

    async def url(self, path: str) -> httpx.URL:
        """Absolute URL of an API path such as `/v2/<name>/manifests/<ref>`."""
        await self._ensure_scheme()
        return httpx.URL(f"{self._scheme}://{self.host}{path}")

    async def _ensure_scheme(self) -> None:
        if self._scheme is not None:
            return
        async with self._scheme_lock:
            if self._scheme is not None:
                return
            if not (self.loopback or self.options.insecure):
                self._scheme = "https"
                return
            # an HTTPS attempt first; a server that does not speak TLS gets plain HTTP
            try:
                resp = await self._client.get(f"https://{self.host}/v2/")
                await resp.aclose()
                self._scheme = "https"
            except httpx.HTTPError as exc:
                causes = _causes(exc)
                if any(isinstance(c, ssl.SSLError) for c in causes) and not any(
                    isinstance(c, ssl.SSLCertVerificationError) for c in causes
                ):
                    self._scheme = "http"
                    return
                raise self._transport_error(exc, repository="") from None

    # --- credentials and tokens -----------------------------------------------------------

    def credentials(self, repository: str) -> Credentials | None:
        if self.options.creds is not None:
            return Credentials.parse(self.options.creds)
        if repository not in self._creds_cache:
            self._creds_cache[repository] = load_credentials(
                self.domain, repository, auth_files=self.options.auth_files
            )
        return self._creds_cache[repository]

    def _auth_header(self, repository: str, scopes: Sequence[str]) -> str | None:
        token = self._tokens.get(_scope_key(scopes))
        if token is not None and token.valid():
            return f"Bearer {token.value}"
        if self._basic:
            creds = self.credentials(repository)
            if creds is not None:
                return creds.basic_header()
        return None

    async def _authenticate(self, resp: httpx.Response, repository: str,
                            scopes: Sequence[str], sent: str | None) -> bool:
        """Answer a 401's challenge; False if there is nothing more to try."""
        challenges = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
        creds = self.credentials(repository)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and bearer.realm:
            key = _scope_key(scopes)
            wanted = list(scopes)
            for extra in bearer.scope.split(" "):
                if extra and extra not in wanted:
                    wanted.append(extra)
            async with self._token_lock:
                current = self._tokens.get(key)
                if (current is not None and current.valid()
                        and f"Bearer {current.value}" != sent):
                    return True  # another task fetched a fresh token meanwhile
                self._tokens[key] = await self._fetch_token(bearer, wanted, creds, repository)
            return True
        if any(c.scheme == "basic" for c in challenges):
            if creds is None or sent == creds.basic_header():
                return False  # nothing to offer, or these credentials were just refused
            self._basic = True
            return True
        return False

    async def _fetch_token(self, challenge: Challenge, scopes: Sequence[str],
                           creds: Credentials | None, repository: str) -> Token:
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in scopes)
        headers = {}
        if creds is not None:
            params.append(("account", creds.username))
            headers["Authorization"] = creds.basic_header()
        try:
            realm = httpx.URL(challenge.realm)
        except httpx.InvalidURL:
            raise RegistryError(
                f"{self.domain} sent an invalid token realm {challenge.realm!r}",
                registry=self.domain, repository=repository) from None
        if realm.scheme not in ("https", "http") or (
            realm.scheme == "http" and not (self.loopback or self.options.insecure
                                            or is_loopback(realm.netloc.decode()))
        ):
            raise RegistryError(
                f"{self.domain} sent a token realm {challenge.realm!r} that is not HTTPS",
                registry=self.domain, repository=repository,
                hint="use --insecure only if you trust the network to this registry")
        try:
            resp = await self._client.get(realm, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, repository=repository,
                                        what=f"token service {realm.host}") from None
        if resp.status_code in (401, 403):
            raise self._auth_error(repository, creds, denied=creds is not None)
        if resp.status_code != 200:
            raise RegistryError(
                f"the token service of {self.domain} answered HTTP {resp.status_code}",
                registry=self.domain, repository=repository, status=resp.status_code)
        try:
            token = token_from_response(resp.json())
        except ValueError:
            token = None
        if token is None:
            raise RegistryError(f"the token service of {self.domain} sent no token",
                                registry=self.domain, repository=repository)
        return token

    # --- requests ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        repository: str,
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
        what: str = "",
        digest: str = "",
        ok: Sequence[int] = (200,),
    ) -> httpx.Response:
        """Send one request, answering one auth challenge; raise a RegistryError unless the
        status is in `ok`. With `stream=True` the caller must `aclose()` the response."""
        await self._ensure_scheme()
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            auth = self._auth_header(repository, scopes)
            if auth is not None:
                hdrs["Authorization"] = auth
            content = body() if body is not None else None
            request = self._client.build_request(method, url, headers=hdrs, content=content)
            try:
                resp = await self._client.send(request, stream=True,
                                               follow_redirects=follow_redirects)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, repository=repository, what=what) from None
            if resp.status_code == 401:
                await resp.aread()
                await resp.aclose()
                if attempt == 0 and await self._authenticate(resp, repository, scopes, auth):
                    continue
                creds = self.credentials(repository)
                raise self._auth_error(repository, creds, denied=creds is not None)
            if resp.status_code in ok:
                if not stream:
                    try:
                        await resp.aread()
                    finally:
                        await resp.aclose()
                return resp
            try:
                body_bytes = await resp.aread()
            finally:
                await resp.aclose()
            raise self.http_error(resp, body_bytes, repository=repository, what=what,
                                  digest=digest)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- errors ----------------------------------------------------------------------------

    def _auth_error(self, repository: str, creds: Credentials | None, *,
                    denied: bool) -> RegistryAuthError:
        where = f"{self.domain}/{repository}" if repository else self.domain
        if denied and creds is not None:
            return RegistryAuthError(
                f"authentication denied for {where}: the registry refused the credentials "
                f"of user {creds.username!r} (or they lack permission)",
                registry=self.domain, repository=repository, status=401,
                hint="check the user name and password; " + _AUTH_HINT)
        return RegistryAuthError(
            f"authentication required for {where}", registry=self.domain,
            repository=repository, status=401, hint=_AUTH_HINT)

    def http_error(self, resp: httpx.Response, body: bytes, *, repository: str, what: str,
                   digest: str = "") -> RegistryError:
        errors = parse_error_body(body)
        codes = tuple(str(e.get("code", "")) for e in errors)
        where = f"{self.domain}/{repository}" if repository else self.domain
        subject = what or f"{resp.request.method} {resp.request.url.path}"
        detail = describe_errors(errors)
        common: dict[str, Any] = {"registry": self.domain, "repository": repository,
                                  "digest": digest, "status": resp.status_code,
                                  "error_codes": codes}
        if "MANIFEST_BLOB_UNKNOWN" in codes:
            blob = next((str(e.get("detail")) for e in errors
                         if e.get("code") == "MANIFEST_BLOB_UNKNOWN" and e.get("detail")), "")
            return ManifestBlobUnknownError(
                f"{where} refused {subject}: it references blob {blob or '(unknown)'}, "
                "which is not in the repository", **common,
                hint="push the blobs (and child manifests) before the manifest that refers "
                     "to them")
        if resp.status_code == 403 or "DENIED" in codes:
            return RegistryAuthError(
                f"access denied to {where} for {subject}" + (f": {detail}" if detail else ""),
                **common, hint=_AUTH_HINT)
        if resp.status_code == 404 or any(c in _NOT_FOUND_CODES for c in codes):
            short = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:2])
            return RegistryNotFoundError(
                f"{subject} not found in {where}" + (f" ({short})" if short else ""),
                **common)
        if resp.status_code == 429 or "TOOMANYREQUESTS" in codes:
            return RegistryError(f"{where}: too many requests ({subject}); try again later",
                                 **common)
        text = detail or body[:200].decode("utf-8", "replace").strip() or resp.reason_phrase
        return RegistryError(
            f"{where} answered HTTP {resp.status_code} to {subject}: {text}", **common)

    def _transport_error(self, exc: httpx.HTTPError, *, repository: str,
                         what: str = "") -> RegistryError:
        causes = _causes(exc)
        scheme = self._scheme or "https"
        target = f"{scheme}://{self.host}" + (
            f" ({self.domain})" if self.host != self.domain else "")
        suffix = f" while fetching {what}" if what else ""
        cert = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
        if cert is not None:
            reason = getattr(cert, "verify_message", "") or str(cert)
            return RegistryTLSError(
                f"TLS verification failed for {target}: {reason}", registry=self.domain,
                repository=repository,
                hint="trust the registry's CA with a CA file (ca_cert / --ca-cert, or "
                     "$SSL_CERT_FILE), or, only if you trust the network, use --insecure")
        if any(isinstance(c, ssl.SSLError) for c in causes):
            return RegistryTLSError(
                f"TLS handshake with {target} failed: {exc}", registry=self.domain,
                repository=repository,
                hint="if the registry speaks plain HTTP, use --insecure")
        if isinstance(exc, httpx.TimeoutException):
            return RegistryUnreachableError(f"timed out talking to {target}{suffix}",
                                            registry=self.domain, repository=repository)
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return RegistryUnreachableError(
                f"cannot connect to registry {target}: connection refused",
                registry=self.domain, repository=repository,
                hint="is the registry running, and is the host:port right?")
        if isinstance(exc, httpx.ConnectError):
            return RegistryUnreachableError(f"cannot connect to registry {target}: {exc}",
                                            registry=self.domain, repository=repository)
        return RegistryUnreachableError(
            f"connection to registry {target} failed{suffix}: {type(exc).__name__}: {exc}",
            registry=self.domain, repository=repository)


def _scope_key(scopes: Sequence[str]) -> str:
    return " ".join(sorted(scopes))

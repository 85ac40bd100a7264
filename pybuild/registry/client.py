"""One registry host: scheme choice, TLS, authentication (Basic, Bearer tokens), errors.

`RegistryClient` speaks HTTP to one registry (a reference's domain; `docker.io` is served by
`registry-1.docker.io`) and turns every failure into a typed `RegistryError`. Plain HTTP is
only used for loopback hosts (`localhost`, 127.0.0.0/8, ::1) or with `insecure=True`, and
only after an HTTPS attempt found no TLS server there; with `insecure=True` certificates are
not verified either (docker's `--insecure-registry`). TLS trust comes from the system store,
`ca_cert` and the host's certs.d directory (`tlsconfig.py`).

Every request is retried on transient faults (`retry.py`): 408/429/5xx answers and broken
connections, with backoff, honouring `Retry-After`; requests whose body cannot be replayed
into the same upload session (PATCH/PUT of blob data) are sent with `retry=False` and the
caller restarts the whole upload instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pybuild.registry.auth import (
    Challenge,
    Credentials,
    Token,
    parse_www_authenticate,
    token_from_response,
)
from pybuild.registry.authfiles import lookup_credentials
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
from pybuild.registry.locations import AuthLocations, auth_file_candidates
from pybuild.registry.options import RegistryOptions
from pybuild.registry.retry import (
    RETRY_STATUSES,
    describe_transport_error,
    gave_up,
    is_transient,
    parse_retry_after,
)
from pybuild.registry.tlsconfig import host_certs_dir, make_ssl_context

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
USER_AGENT = "pybuild/0.1"
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN",
                              "BLOB_UPLOAD_UNKNOWN"})
_AUTH_HINT = ("log in with `pybuild login` (or `docker login` / `podman login`), or give "
              "credentials with --creds USER:PASSWORD (pybuild reads $REGISTRY_AUTH_FILE, "
              "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json and the "
              "credential helpers they name)")
CLIENT_ID = "pybuild"  # the OAuth2 client_id sent to token services

BodyFactory = Callable[[], "bytes | AsyncIterator[bytes]"]
T = TypeVar("T")


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


def ssl_context(options: RegistryOptions, host: str = "") -> ssl.SSLContext:
    """System trust (plus $SSL_CERT_FILE), the CA file and `host`'s certs.d directory; no
    verification when insecure."""
    return make_ssl_context(insecure=options.insecure, ca_cert=options.ca_cert,
                            certs_dir=host_certs_dir(host, options.certs_dirs) if host else None)


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
        self._login: Credentials | None = None  # use_credentials()
        self._secrets: set[str] = set()  # every secret used, blanked out of error texts
        self._client = httpx.AsyncClient(
            # certs.d is looked up by the name the user wrote (containers/image does too)
            verify=ssl_context(self.options, domain),
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
            except (httpx.HTTPError, ssl.SSLError) as exc:
                causes = _causes(exc)
                tls = [c for c in causes if isinstance(c, ssl.SSLError)]
                if tls and not any(isinstance(c, ssl.SSLCertVerificationError)
                                   or "ALERT" in (getattr(c, "reason", "") or "")
                                   for c in tls):
                    self._scheme = "http"  # no TLS server there
                    return
                self._scheme = "https"  # a TLS server that refused us (e.g. no client cert)
                raise self._transport_error(exc, repository="") from None

    # --- credentials and tokens -----------------------------------------------------------

    def _auth_locations(self) -> AuthLocations:
        files = (tuple(auth_file_candidates(os.environ)) if self.options.auth_files is None
                 else self.options.auth_files)
        return AuthLocations(read=files, write=files[0] if files else Path(os.devnull),
                             search_path=self.options.helper_path)

    def credentials(self, repository: str) -> Credentials | None:
        if self._login is not None:
            creds: Credentials | None = self._login
        elif self.options.creds is not None:
            creds = Credentials.parse(self.options.creds)
        else:
            if repository not in self._creds_cache:
                self._creds_cache[repository] = lookup_credentials(
                    self.domain, repository, self._auth_locations())
            creds = self._creds_cache[repository]
        if creds is not None:
            self._secrets.update(creds.secrets)
        return creds

    def use_credentials(self, creds: Credentials) -> None:
        """Use these credentials for every repository (a login being verified)."""
        self._login = creds
        self._secrets.update(creds.secrets)

    def _auth_header(self, repository: str, scopes: Sequence[str]) -> str | None:
        token = self._tokens.get(_scope_key(scopes))
        if token is not None and token.valid():
            return f"Bearer {token.value}"
        if self._basic:
            creds = self.credentials(repository)
            if creds is not None and creds.has_basic:
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
                self._tokens[key] = await self.fetch_token(bearer, wanted, creds, repository)
            return True
        if any(c.scheme == "basic" for c in challenges):
            if creds is None or not creds.has_basic or sent == creds.basic_header():
                return False  # nothing to offer, or these credentials were just refused
            self._basic = True
            return True
        return False

    def _realm(self, challenge: Challenge, repository: str) -> httpx.URL:
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
        return realm

    async def fetch_token(self, challenge: Challenge, scopes: Sequence[str],
                          creds: Credentials | None, repository: str, *,
                          offline: bool = False) -> Token:
        """A bearer token for `scopes` from the challenge's realm (distribution's token
        spec). An identity token is exchanged with an OAuth2 `grant_type=refresh_token` POST;
        a service that does not offer POST (404/405/400/401, as containerd accepts) gets the
        GET form, with Basic credentials when there are any. `offline` asks for a refresh
        token too (docker login's `offline_token=true`)."""
        realm = self._realm(challenge, repository)
        if creds is not None:
            self._secrets.update(creds.secrets)
        if creds is not None and creds.identity_token:
            token = await self._oauth_token(realm, challenge, scopes, creds, repository)
            if token is not None:
                return token
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in scopes)
        if offline:
            params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
        headers = {}
        if creds is not None and creds.username and (creds.password or creds.identity_token):
            params.append(("account", creds.username))
            secret = creds.password or creds.identity_token
            headers["Authorization"] = Credentials(creds.username, secret).basic_header()
        resp = await self._token_request("GET", realm, repository, params=params,
                                         headers=headers)
        return self._token_from(resp, creds, repository)

    async def _oauth_token(self, realm: httpx.URL, challenge: Challenge, scopes: Sequence[str],
                           creds: Credentials, repository: str) -> Token | None:
        form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                "client_id": CLIENT_ID, "scope": " ".join(scopes)}
        if challenge.service:
            form["service"] = challenge.service
        resp = await self._token_request("POST", realm, repository, data=form)
        if resp.status_code in (400, 401, 404, 405):
            return None  # not offered: the GET form instead
        return self._token_from(resp, creds, repository)

    async def _token_request(self, method: str, realm: httpx.URL, repository: str,
                             **kw: Any) -> httpx.Response:
        policy = self.options.retry
        failures = 0
        while True:
            try:
                resp = await self._client.request(method, realm, **kw)
            except (httpx.HTTPError, ssl.SSLError) as exc:
                if is_transient(exc) and failures + 1 < policy.attempts:
                    failures += 1
                    await asyncio.sleep(policy.delay(failures))
                    continue
                raise self._transport_error(exc, repository=repository,
                                            what=f"a token from {realm.host}",
                                            attempts=failures + 1) from None
            if resp.status_code in RETRY_STATUSES and failures + 1 < policy.attempts:
                failures += 1
                await asyncio.sleep(self._wait(resp, failures, repository, "a token"))
                continue
            return resp

    def _token_from(self, resp: httpx.Response, creds: Credentials | None,
                    repository: str) -> Token:
        if resp.status_code in (401, 403):
            raise self._auth_error(repository, creds, denied=creds is not None)
        if resp.status_code != 200:
            raise RegistryError(
                f"the token service of {self.domain} answered HTTP {resp.status_code}",
                registry=self.domain, repository=repository, status=resp.status_code,
                transient=resp.status_code in RETRY_STATUSES)
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
        retry: bool = True,
    ) -> httpx.Response:
        """Send one request, answering one auth challenge and retrying transient faults
        (unless `retry=False`); raise a RegistryError unless the status is in `ok`. With
        `stream=True` the caller must `aclose()` the response."""

        async def consume(resp: httpx.Response) -> None:
            if not stream:
                try:
                    await resp.aread()
                finally:
                    await resp.aclose()

        resp, _ = await self._exchange(
            method, url, repository=repository, scopes=scopes, headers=headers, body=body,
            follow_redirects=follow_redirects, what=what, digest=digest, ok=ok, retry=retry,
            consume=consume)
        return resp

    async def request_bytes(self, method: str, url: httpx.URL | str, *, repository: str,
                            limit: int, scopes: Sequence[str] = (),
                            headers: Mapping[str, str] | None = None, what: str = "",
                            digest: str = "", ok: Sequence[int] = (200,)
                            ) -> tuple[httpx.Response, bytes]:
        """A request whose whole body (at most `limit` bytes) is read under the retries: a
        connection lost mid-body is tried again too."""

        async def consume(resp: httpx.Response) -> bytes:
            buf = bytearray()
            try:
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        raise RegistryError(
                            f"{self.domain}/{repository}: {what or 'the response'} is larger "
                            f"than {limit} bytes; refusing it", code="registry-bad-manifest",
                            registry=self.domain, repository=repository)
            finally:
                await resp.aclose()
            return bytes(buf)

        return await self._exchange(method, url, repository=repository, scopes=scopes,
                                    headers=headers, body=None, follow_redirects=False,
                                    what=what, digest=digest, ok=ok, retry=True,
                                    consume=consume)

    async def _exchange(
        self, method: str, url: httpx.URL | str, *, repository: str, scopes: Sequence[str],
        headers: Mapping[str, str] | None, body: BodyFactory | None, follow_redirects: bool,
        what: str, digest: str, ok: Sequence[int], retry: bool,
        consume: Callable[[httpx.Response], Awaitable[T]], challenge: bool = True,
    ) -> tuple[httpx.Response, T]:
        await self._ensure_scheme()
        policy = self.options.retry
        attempts = policy.attempts if retry else 1
        failures = 0
        answered = False  # one 401 challenge is answered per request
        while True:
            hdrs = dict(headers or {})
            auth = self._auth_header(repository, scopes)
            if auth is not None:
                hdrs["Authorization"] = auth
            content = body() if body is not None else None
            request = self._client.build_request(method, url, headers=hdrs, content=content)
            try:
                resp = await self._client.send(request, stream=True,
                                               follow_redirects=follow_redirects)
            except (httpx.HTTPError, ssl.SSLError) as exc:
                if is_transient(exc) and failures + 1 < attempts:
                    failures += 1
                    await asyncio.sleep(policy.delay(failures))
                    continue
                raise self._transport_error(exc, repository=repository, what=what,
                                            attempts=failures + 1) from None
            if resp.status_code == 401 and challenge:
                await _drain(resp)
                if not answered and await self._authenticate(resp, repository, scopes, auth):
                    answered = True
                    continue
                creds = self.credentials(repository)
                raise self._auth_error(repository, creds, denied=creds is not None)
            if resp.status_code in ok:
                try:
                    return resp, await consume(resp)
                except (httpx.HTTPError, ssl.SSLError) as exc:
                    if is_transient(exc) and failures + 1 < attempts:
                        failures += 1
                        await asyncio.sleep(policy.delay(failures))
                        continue
                    raise self._transport_error(exc, repository=repository, what=what,
                                                attempts=failures + 1) from None
            body_bytes = await _drain(resp)
            if resp.status_code in RETRY_STATUSES and failures + 1 < attempts:
                failures += 1
                await asyncio.sleep(self._wait(resp, failures, repository, what))
                continue
            raise self.http_error(resp, body_bytes, repository=repository, what=what,
                                  digest=digest, attempts=failures + 1)

    def _wait(self, resp: httpx.Response, failures: int, repository: str, what: str) -> float:
        """The pause before the next try; a Retry-After beyond the budget is an error."""
        policy = self.options.retry
        retry_after = parse_retry_after(resp.headers.get("Retry-After", ""))
        if retry_after is not None and retry_after > policy.max_retry_after:
            where = f"{self.domain}/{repository}" if repository else self.domain
            raise RegistryError(
                f"{where} answered HTTP {resp.status_code} to {what or resp.request.url.path}"
                f" and asks to retry after {retry_after:.0f} s, longer than pybuild waits "
                f"({policy.max_retry_after:g} s)", registry=self.domain,
                repository=repository, status=resp.status_code, transient=True,
                hint="try again later")
        return policy.delay(failures, retry_after)

    async def ping(self) -> tuple[httpx.Response, list[Challenge]]:
        """`GET /v2/` without credentials: the registry's answer and its challenges."""
        url = await self.url("/v2/")
        resp, _ = await self._exchange(
            "GET", url, repository="", scopes=(), headers=None, body=None,
            follow_redirects=False, what="the API root /v2/", digest="", ok=(200, 401),
            retry=True, consume=_drain, challenge=False)
        return resp, parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))

    async def get_with_header(self, path: str, authorization: str) -> httpx.Response:
        """GET an API path with this exact Authorization header (no challenge answered)."""
        url = await self.url(path)
        try:
            resp = await self._client.get(url, headers={"Authorization": authorization})
        except (httpx.HTTPError, ssl.SSLError) as exc:
            raise self._transport_error(exc, repository="", what=path) from None
        return resp

    # --- errors ----------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _auth_error(self, repository: str, creds: Credentials | None, *,
                    denied: bool) -> RegistryAuthError:
        where = f"{self.domain}/{repository}" if repository else self.domain
        if denied and creds is not None:
            who = (f"the credentials of user {creds.username!r}" if creds.username
                   else "the identity token")
            return RegistryAuthError(
                f"authentication denied for {where}: the registry refused {who} (or they "
                "lack permission)", registry=self.domain, repository=repository,
                status=401, hint="check the user name and password; " + _AUTH_HINT)
        return RegistryAuthError(
            f"authentication required for {where}", registry=self.domain,
            repository=repository, status=401, hint=_AUTH_HINT)

    def http_error(self, resp: httpx.Response, body: bytes, *, repository: str, what: str,
                   digest: str = "", attempts: int = 1) -> RegistryError:
        errors = parse_error_body(body)
        codes = tuple(str(e.get("code", "")) for e in errors)
        where = f"{self.domain}/{repository}" if repository else self.domain
        subject = what or f"{resp.request.method} {resp.request.url.path}"
        detail = self.redact(describe_errors(errors))
        tail = gave_up(attempts)
        transient = resp.status_code in RETRY_STATUSES
        common: dict[str, Any] = {"registry": self.domain, "repository": repository,
                                  "digest": digest, "status": resp.status_code,
                                  "error_codes": codes, "transient": transient}
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
                f"{subject} not found in {where}" + (f" ({self.redact(short)})" if short
                                                      else ""), **common)
        if resp.status_code == 429 or "TOOMANYREQUESTS" in codes:
            return RegistryError(f"{where}: too many requests ({subject}); try again later"
                                 + tail, **common)
        text = detail or self.redact(
            body[:200].decode("utf-8", "replace").strip()) or resp.reason_phrase
        return RegistryError(
            f"{where} answered HTTP {resp.status_code} to {subject}: {text}{tail}", **common)

    def _transport_error(self, exc: httpx.HTTPError | ssl.SSLError, *, repository: str,
                         what: str = "", attempts: int = 1) -> RegistryError:
        causes = _causes(exc)
        scheme = self._scheme or "https"
        target = f"{scheme}://{self.host}" + (
            f" ({self.domain})" if self.host != self.domain else "")
        suffix = f" while fetching {what}" if what else ""
        tail = gave_up(attempts)
        cert = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
        if cert is not None:
            reason = getattr(cert, "verify_message", "") or str(cert)
            return RegistryTLSError(
                f"TLS verification failed for {target}: {reason}", registry=self.domain,
                repository=repository,
                hint="trust the registry's CA with a CA file (ca_cert / --ca-cert, "
                     "$SSL_CERT_FILE, or ca.crt in /etc/docker/certs.d/<host:port>/), or, only "
                     "if you trust the network, use --insecure")
        if any(isinstance(c, ssl.SSLError) for c in causes):
            return RegistryTLSError(
                f"TLS handshake with {target} failed: {exc or type(exc).__name__}",
                registry=self.domain, repository=repository,
                hint="if the registry speaks plain HTTP, use --insecure; if it wants a client "
                     "certificate, put client.cert and client.key in its certs.d directory")
        if isinstance(exc, httpx.TimeoutException):
            return RegistryUnreachableError(
                f"{describe_transport_error(exc, self.options.timeout)} talking to "
                f"{target}{suffix}{tail}", registry=self.domain, repository=repository,
                transient=True)
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return RegistryUnreachableError(
                f"cannot connect to registry {target}: connection refused",
                registry=self.domain, repository=repository,
                hint="is the registry running, and is the host:port right?")
        if isinstance(exc, httpx.ConnectError) and not is_transient(exc):
            return RegistryUnreachableError(
                f"cannot connect to registry {target}: {exc or type(exc).__name__}",
                registry=self.domain, repository=repository)
        return RegistryUnreachableError(
            f"connection to registry {target} failed{suffix}: "
            f"{describe_transport_error(exc, self.options.timeout)}{tail}",
            registry=self.domain, repository=repository, transient=is_transient(exc))


async def _drain(resp: httpx.Response) -> bytes:
    """Read what is left of a response we will not use (an error body), then close it."""
    try:
        return await resp.aread()
    except (httpx.HTTPError, ssl.SSLError):
        return b""
    finally:
        await resp.aclose()


def _scope_key(scopes: Sequence[str]) -> str:
    return " ".join(sorted(scopes))

"""Real registries on loopback for tests: Debian's `docker-registry` (distribution 2.8).

`registry`: plain HTTP, anonymous. `auth_registry`: TLS (a self-signed certificate made with
openssl, `ca_cert` points at it) plus htpasswd Basic auth (`username`/`password`).
`token_registry`: plain HTTP with distribution's token auth, backed by `TokenService`.
`run_registry(...)` starts others (mutual TLS with `client_ca`, schema 1 compatibility).
All listen on 127.0.0.1 with a free port and a temp storage dir, and are stopped (SIGTERM,
then SIGKILL) at the end. Import the fixtures into a test module:
`from tests.registry_fixture import auth_registry, registry  # noqa: F401`.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tooling import require_tool, traversable_dir

USERNAME = "pyuser"
PASSWORD = "pypass-" + "x1"


@dataclass(frozen=True)
class RunningRegistry:
    host: str  # "127.0.0.1:PORT"
    root: Path  # working dir: config, storage, certificate, log
    tls: bool = False
    ca_cert: Path | None = None
    username: str = ""
    password: str = ""
    token_service: TokenService | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def ref(self, name: str) -> str:
        """`127.0.0.1:PORT/name` (name is `repo:tag` or `repo@digest`)."""
        return f"{self.host}/{name}"

    @property
    def log(self) -> str:
        try:
            return (self.root / "registry.log").read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


TOKEN_SERVICE = "pybuild-registry"
TOKEN_ISSUER = "pybuild-test-issuer"
PRIVATE_PREFIX = "private/"  # repositories only USERNAME may pull


@dataclass(frozen=True)
class TokenRequest:
    method: str  # GET or POST
    grant: str  # "basic" (GET with Basic), "anonymous", "refresh_token", "password"
    account: str
    scopes: list[str]
    user: str  # who the token is for ("" = anonymous)
    offline: bool = False  # a refresh token was asked for


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenService:
    """A distribution token service (docs/spec/auth/token.md) on 127.0.0.1: RS256 JWTs
    signed with openssl, the certificate in the `x5c` header, which the registry trusts
    through `rootcertbundle`.

    GET with Basic auth (USERNAME/PASSWORD, or a refresh token it issued as the password) or
    anonymous; `offline_token=true` adds a `refresh_token`. POST is the OAuth2 form
    (`grant_type=refresh_token` or `password`); `post_supported = False` answers it 404, as
    registries without the OAuth2 endpoint do. Grants: `pull` to anyone except on
    `private/...` repositories, `push` (and private pulls) to USERNAME only. Records every
    request in `requests`."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        self._x5c = base64.b64encode(der).decode("ascii")
        self.requests: list[TokenRequest] = []
        self.refresh_tokens: dict[str, str] = {}  # token -> user
        self.post_supported = True
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.handle(self)

            def do_POST(self) -> None:
                service.handle_post(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _refresh_token(self, user: str) -> str:
        token = "rt-" + secrets.token_hex(16)
        self.refresh_tokens[token] = user
        return token

    def _grant(self, user: str, scopes: list[str]) -> list[dict[str, object]]:
        access: list[dict[str, object]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",")
                       if user or (a == "pull" and not name.startswith(PRIVATE_PREFIX))]
            access.append({"type": kind, "name": name, "actions": granted})
        return access

    def _answer(self, req: http.server.BaseHTTPRequestHandler, status: int,
                body: dict[str, object] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        scopes = query.get("scope", [])
        user = ""
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            valid = name == USERNAME and (password == PASSWORD or
                                          self.refresh_tokens.get(password) == name)
            if not valid:
                self._answer(req, 401, {"details": "incorrect username or password"})
                return
            user = name
        offline = query.get("offline_token", [""])[0] == "true"
        self.requests.append(TokenRequest("GET", "basic" if user else "anonymous",
                                          query.get("account", [""])[0], scopes, user,
                                          offline))
        body: dict[str, object] = {"token": self.sign(user or "anonymous",
                                                      self._grant(user, scopes)),
                                   "expires_in": 300}
        if offline and user:
            body["refresh_token"] = self._refresh_token(user)
        self._answer(req, 200, body)

    def handle_post(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length", "0") or 0)
        form = urllib.parse.parse_qs(req.rfile.read(length).decode())
        grant = form.get("grant_type", [""])[0]
        scopes = " ".join(form.get("scope", [""])).split()
        if not self.post_supported:
            self.requests.append(TokenRequest("POST", grant, "", scopes, "", False))
            self._answer(req, 404, {"errors": [{"code": "NOT_FOUND"}]})
            return
        user = ""
        if grant == "refresh_token":
            user = self.refresh_tokens.get(form.get("refresh_token", [""])[0], "")
        elif grant == "password" and (form.get("username", [""])[0],
                                      form.get("password", [""])[0]) == (USERNAME, PASSWORD):
            user = USERNAME
        self.requests.append(TokenRequest("POST", grant, "", scopes, user,
                                          form.get("access_type", [""])[0] == "offline"))
        if not user:
            self._answer(req, 401, {"error": "invalid_grant"})
            return
        body: dict[str, object] = {"access_token": self.sign(user, self._grant(user, scopes)),
                                   "expires_in": 300, "scope": " ".join(scopes)}
        if grant == "password" and form.get("access_type", [""])[0] == "offline":
            body["refresh_token"] = self._refresh_token(user)
        self._answer(req, 200, body)

    def sign(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
                  "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), capture_output=True, check=True).stdout
        return signing_input + "." + _b64url(signature)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert.pem, key.pem)."""
    openssl = require_tool("openssl")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def make_client_certificate(workdir: Path, ca_cert: Path, ca_key: Path) -> tuple[Path, Path]:
    """A client certificate signed by the (self-signed) server certificate as CA."""
    openssl = require_tool("openssl")
    key, csr, cert = workdir / "client.key", workdir / "client.csr", workdir / "client.cert"
    ext = workdir / "client.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n")
    subprocess.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pybuild-test",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    subprocess.run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
                    str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def make_htpasswd(workdir: Path, username: str, password: str) -> Path:
    htpasswd = require_tool("htpasswd")
    proc = subprocess.run([htpasswd, "-Bbn", username, password], check=True,
                          capture_output=True, text=True)
    path = workdir / "htpasswd"
    path.write_text(proc.stdout)
    return path


def _config(workdir: Path, port: int, *, tls: tuple[Path, Path] | None,
            htpasswd: Path | None, token: tuple[str, Path] | None = None,
            client_ca: Path | None = None, schema1: bool = False) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {workdir / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
        if client_ca is not None:  # mutual TLS: client certificates signed by this CA
            lines += ["    clientcas:", f"      - {client_ca}"]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: pybuild-realm", f"    path: {htpasswd}"]
    if token is not None:
        realm, bundle = token
        lines += ["auth:", "  token:", f"    realm: {realm}", f"    service: {TOKEN_SERVICE}",
                  f"    issuer: {TOKEN_ISSUER}", f"    rootcertbundle: {bundle}"]
    if schema1:
        lines += ["compatibility:", "  schema1:", "    enabled: true"]
    return "\n".join(lines) + "\n"


def _ready(port: int, tls: bool, client: tuple[Path, Path] | None = None) -> bool:
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if client is not None:
                ctx.load_cert_chain(str(client[0]), str(client[1]))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v2/")
        status = conn.getresponse().status
        conn.close()
        return status in (200, 401)
    except OSError:
        return False


@contextlib.contextmanager
def run_registry(*, tls: bool = False, auth: bool = False, bearer: bool = False,
                 mtls: bool = False, schema1: bool = False) -> Iterator[RunningRegistry]:
    """Start a docker-registry (optionally TLS + htpasswd, token auth backed by a small
    in-process token service, TLS that requires a client certificate (`client_cert` /
    `client_key` are one signed by the registry's CA), schema 1 compatibility) and stop it
    on exit."""
    binary = require_tool("docker-registry")
    workdir = traversable_dir("pybuild-registry-")
    proc: subprocess.Popen[bytes] | None = None
    token_service: TokenService | None = None
    try:
        cert_key = make_certificate(workdir) if tls or mtls else None
        client = make_client_certificate(workdir, *cert_key) if mtls and cert_key else None
        htpasswd = make_htpasswd(workdir, USERNAME, PASSWORD) if auth and not bearer else None
        token = None
        if bearer:
            signing = workdir / "token"
            signing.mkdir()
            token_service = TokenService(*make_certificate(signing))
            token = (token_service.realm, token_service.cert)
        for _attempt in range(5):  # the free port may be taken before the registry binds it
            port = free_port()
            config = workdir / "config.yml"
            config.write_text(_config(workdir, port, tls=cert_key, htpasswd=htpasswd,
                                      token=token, client_ca=cert_key[0] if client else None,
                                      schema1=schema1))
            with open(workdir / "registry.log", "ab") as log:
                proc = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=workdir)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if _ready(port, tls or mtls, client):
                    break
                time.sleep(0.05)
            if proc.poll() is None and _ready(port, tls or mtls, client):
                break
            _stop(proc)
            proc = None
        if proc is None:
            log_text = (workdir / "registry.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"docker-registry did not start:\n{log_text}", pytrace=False)
        yield RunningRegistry(
            host=f"127.0.0.1:{port}", root=workdir, tls=tls or mtls,
            ca_cert=cert_key[0] if cert_key else None,
            client_cert=client[0] if client else None,
            client_key=client[1] if client else None,
            username=USERNAME if auth or bearer else "",
            password=PASSWORD if auth or bearer else "", token_service=token_service)
    finally:
        if proc is not None:
            _stop(proc)
        if token_service is not None:
            token_service.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def token_registry() -> Iterator[RunningRegistry]:
    """A plain-HTTP docker-registry with Bearer token auth; its token service hands out
    tokens to USERNAME/PASSWORD (push + pull) and to anonymous clients (pull only)."""
    with run_registry(bearer=True) as reg:
        yield reg


@pytest.fixture(scope="session")
def registry() -> Iterator[RunningRegistry]:
    """A plain-HTTP, anonymous docker-registry on 127.0.0.1."""
    with run_registry() as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[RunningRegistry]:
    """A TLS + htpasswd (Basic auth) docker-registry on 127.0.0.1."""
    with run_registry(tls=True, auth=True) as reg:
        yield reg

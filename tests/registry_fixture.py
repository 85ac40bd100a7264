"""Real registries on loopback for tests: Debian's `docker-registry` (distribution 2.8).

`registry`: plain HTTP, anonymous. `auth_registry`: TLS (a self-signed certificate made with
openssl, `ca_cert` points at it) plus htpasswd Basic auth (`username`/`password`). Both listen
on 127.0.0.1 with a free port and a temp storage dir, and are stopped (SIGTERM, then SIGKILL)
at the end of the session. Import the fixtures into a test module:
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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenService:
    """A distribution token service (docs/spec/auth/token.md) on 127.0.0.1: RS256 JWTs
    signed with openssl, the certificate in the `x5c` header, which the registry trusts
    through `rootcertbundle`. Records every request it served in `requests`."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        self._x5c = base64.b64encode(der).decode("ascii")
        self.requests: list[tuple[str, list[str], str]] = []  # (account, scopes, auth user)
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        scopes = query.get("scope", [])
        user = ""
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (name, password) != (USERNAME, PASSWORD):
                req.send_response(401)
                req.end_headers()
                return
            user = name
        self.requests.append((query.get("account", [""])[0], scopes, user))
        access: list[dict[str, object]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a == "pull" or user]
            access.append({"type": kind, "name": name, "actions": granted})
        body = json.dumps({"token": self.sign(user or "anonymous", access),
                           "expires_in": 300}).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

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


def make_htpasswd(workdir: Path, username: str, password: str) -> Path:
    htpasswd = require_tool("htpasswd")
    proc = subprocess.run([htpasswd, "-Bbn", username, password], check=True,
                          capture_output=True, text=True)
    path = workdir / "htpasswd"
    path.write_text(proc.stdout)
    return path


def _config(workdir: Path, port: int, *, tls: tuple[Path, Path] | None,
            htpasswd: Path | None, token: tuple[str, Path] | None = None) -> str:
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
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: pybuild-realm", f"    path: {htpasswd}"]
    if token is not None:
        realm, bundle = token
        lines += ["auth:", "  token:", f"    realm: {realm}", f"    service: {TOKEN_SERVICE}",
                  f"    issuer: {TOKEN_ISSUER}", f"    rootcertbundle: {bundle}"]
    return "\n".join(lines) + "\n"


def _ready(port: int, tls: bool) -> bool:
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
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
def run_registry(*, tls: bool = False, auth: bool = False,
                 bearer: bool = False) -> Iterator[RunningRegistry]:
    """Start a docker-registry (optionally TLS + htpasswd, or token auth backed by a small
    in-process token service) and stop it on exit."""
    binary = require_tool("docker-registry")
    workdir = traversable_dir("pybuild-registry-")
    proc: subprocess.Popen[bytes] | None = None
    token_service: TokenService | None = None
    try:
        cert_key = make_certificate(workdir) if tls else None
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
                                      token=token))
            with open(workdir / "registry.log", "ab") as log:
                proc = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=workdir)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if _ready(port, tls):
                    break
                time.sleep(0.05)
            if proc.poll() is None and _ready(port, tls):
                break
            _stop(proc)
            proc = None
        if proc is None:
            log_text = (workdir / "registry.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"docker-registry did not start:\n{log_text}", pytrace=False)
        yield RunningRegistry(
            host=f"127.0.0.1:{port}", root=workdir, tls=tls,
            ca_cert=cert_key[0] if cert_key else None,
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

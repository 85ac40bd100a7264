"""TLS trust where docker and podman keep it: certs.d/<host:port>/ca.crt, client.cert and
client.key for mutual TLS (a registry that requires client certificates), and --ca-cert for
`ADD https://` as well as for registries."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.content.store import ContentStore
from pybuild.errors import UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.registry import RegistryOptions, RegistryTLSError, pull_sync, push_sync
from tests.integration.conftest import run_pybuild
from tests.registry_fixture import (  # noqa: F401  (pytest fixtures)
    RunningRegistry,
    auth_registry,
    make_certificate,
    run_registry,
)
from tests.registry_images import random_image
from tests.tooling import require_tool


@pytest.fixture(scope="module")
def mtls_registry() -> Iterator[RunningRegistry]:
    with run_registry(mtls=True) as reg:
        yield reg


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContentStore, Descriptor]:
    store = ContentStore(tmp_path_factory.mktemp("tls") / "content")
    return store, random_image(store, sizes=(200_000,), seed=30)


def certs_dir(base: Path, reg: RunningRegistry, *, client: bool) -> Path:
    d = base / reg.host
    d.mkdir(parents=True, exist_ok=True)
    assert reg.ca_cert is not None
    (d / "ca.crt").write_bytes(reg.ca_cert.read_bytes())
    if client:
        assert reg.client_cert is not None and reg.client_key is not None
        (d / "client.cert").write_bytes(reg.client_cert.read_bytes())
        (d / "client.key").write_bytes(reg.client_key.read_bytes())
    return base


def test_certs_d_ca_is_trusted(auth_registry: RunningRegistry,  # noqa: F811
                               image: tuple[ContentStore, Descriptor], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    store, desc = image
    creds = f"{auth_registry.username}:{auth_registry.password}"
    ref = auth_registry.ref("tls/certsd:1")
    with pytest.raises(RegistryTLSError, match="TLS verification failed") as err:
        push_sync(store, desc, ref, options=RegistryOptions(auth_files=(), creds=creds))
    assert "certs.d" in (err.value.hint or "")
    # the second base has it: the first base without a directory for the host is skipped
    bases = (tmp_path / "empty", certs_dir(tmp_path / "certs.d", auth_registry, client=False))
    options = RegistryOptions(auth_files=(), creds=creds, certs_dirs=bases)
    assert push_sync(store, desc, ref, options=options) == desc.digest
    fresh = ContentStore(tmp_path / "content")
    pull_sync(ref, fresh, options=options)
    fresh.verify(desc.digest)


def test_mutual_tls_with_client_cert_and_key_in_certs_d(
        mtls_registry: RunningRegistry, image: tuple[ContentStore, Descriptor],
        tmp_path: Path) -> None:
    store, desc = image
    ref = mtls_registry.ref("tls/mtls:1")
    only_ca = RegistryOptions(auth_files=(), certs_dirs=(
        certs_dir(tmp_path / "ca-only", mtls_registry, client=False),))
    with pytest.raises(RegistryTLSError) as err:
        push_sync(store, desc, ref, options=only_ca)
    assert "client.cert" in (err.value.hint or "")
    base = certs_dir(tmp_path / "certs.d", mtls_registry, client=True)
    options = RegistryOptions(auth_files=(), certs_dirs=(base,))
    assert push_sync(store, desc, ref, options=options) == desc.digest
    # skopeo reads it back through the same directory (docker's layout)
    proc = subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--cert-dir",
                           str(base / mtls_registry.host), f"docker://{ref}"],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == store.read(desc.digest)
    fresh = ContentStore(tmp_path / "content")
    pull_sync(ref, fresh, options=options)
    fresh.verify(desc.digest)


def test_a_client_cert_without_its_key_is_an_error(mtls_registry: RunningRegistry,
                                                   tmp_path: Path) -> None:
    base = certs_dir(tmp_path / "certs.d", mtls_registry, client=True)
    (base / mtls_registry.host / "client.key").unlink()
    with pytest.raises(UserError, match=r"missing key client\.key for client certificate"):
        pull_sync(mtls_registry.ref("tls/mtls:1"), ContentStore(tmp_path / "c"),
                  options=RegistryOptions(auth_files=(), certs_dirs=(base,)))


# --- ADD https:// with --ca-cert ----------------------------------------------------------


@contextlib.contextmanager
def https_server(root: Path, cert: Path, key: Path) -> Iterator[str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_add_https_trusts_the_ca_cert(fresh_root: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello over TLS\n")
    cert, key = make_certificate(tmp_path)
    env = {"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}
    with https_server(site, cert, key) as url:
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {url}/hello.txt /hello.txt\n")
        untrusted = run_pybuild(fresh_root, "build", "-t", "add-tls:1", str(ctx), env=env)
        assert untrusted.code == 1
        assert "certificate verify failed" in untrusted.err and "Traceback" not in untrusted.err
        ok = run_pybuild(fresh_root, "build", "-t", "add-tls:1", "--ca-cert", str(cert),
                         str(ctx), env=env)
        assert ok.code == 0, ok.err
    out = tmp_path / "out"
    e = run_pybuild(fresh_root, "export", "add-tls:1", "-o", f"type=local,dest={out}")
    assert e.code == 0, e.err
    assert (out / "hello.txt").read_text() == "hello over TLS\n"

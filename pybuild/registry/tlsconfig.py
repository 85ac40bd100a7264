"""TLS trust for one registry host, from where docker and podman keep it.

A per-host directory `<base>/<host[:port]>/` in the first of the certs.d bases that has one
(containers/image's order: `~/.config/containers/certs.d`, `/etc/containers/certs.d`,
`/etc/docker/certs.d`) adds its `*.crt` files to the trusted CAs and loads a `*.cert` +
`*.key` pair as the client certificate (mutual TLS); a `.cert` without its `.key` (or the
reverse) is an error, as in containers/image's `tlsclientconfig.SetupCertificates`. The system
store (with `$SSL_CERT_FILE`) and `--ca-cert` stay trusted too. `insecure` (docker's
`--insecure-registry`, registries.conf `insecure = true`) skips verification.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from pybuild.errors import UserError


def host_certs_dir(host: str, bases: Sequence[Path]) -> Path | None:
    """The first `<base>/<host>` directory that exists."""
    if not host or "/" in host or host in (".", ".."):
        return None
    for base in bases:
        candidate = base / host
        try:
            if candidate.is_dir():
                return candidate
        except PermissionError:
            continue
    return None


def _load_dir(ctx: ssl.SSLContext, directory: Path, *, verify: bool) -> None:
    try:
        names = sorted(os.listdir(directory))
    except PermissionError:
        return  # as containers/image: an unreadable directory is skipped
    except OSError as exc:
        raise UserError(f"cannot read the certificate directory {directory}: {exc.strerror}",
                        code="bad-ca-file") from None
    pairs: list[tuple[Path, Path]] = []
    for name in names:
        path = directory / name
        if name.endswith(".crt"):
            if verify:
                try:
                    ctx.load_verify_locations(cafile=str(path))
                except (OSError, ssl.SSLError) as exc:
                    raise UserError(f"cannot load the CA certificate {path}: {exc}",
                                    code="bad-ca-file") from None
        elif name.endswith(".cert"):
            key = name.removesuffix(".cert") + ".key"
            if key not in names:
                raise UserError(f"missing key {key} for client certificate {path} (CA "
                                "certificates use the extension .crt)", code="bad-ca-file")
            pairs.append((path, directory / key))
        elif name.endswith(".key"):
            cert = name.removesuffix(".key") + ".cert"
            if cert not in names:
                raise UserError(f"missing client certificate {cert} for key {path}",
                                code="bad-ca-file")
    if pairs:
        cert_file, key_file = pairs[0]  # Go's tls.Config offers the first one too
        try:
            ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot load the client certificate {cert_file} with key "
                            f"{key_file}: "
                            f"{exc}", code="bad-ca-file") from None


def make_ssl_context(*, insecure: bool = False, ca_cert: Path | None = None,
                     certs_dir: Path | None = None) -> ssl.SSLContext:
    """System trust (plus $SSL_CERT_FILE), the CA file, the host's certs.d directory. One
    context per distinct configuration and process: loading the system store costs ~0.1 s,
    and a pull through mirrors, or imagetools, opens several clients."""
    return _cached_context(insecure, ca_cert, certs_dir, os.environ.get("SSL_CERT_FILE"),
                           os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=32)
def _cached_context(insecure: bool, ca_cert: Path | None, certs_dir: Path | None,
                    _cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    # ($SSL_CERT_FILE/$SSL_CERT_DIR are part of the key: OpenSSL reads them at creation)
    ctx = ssl.create_default_context()  # honours $SSL_CERT_FILE / $SSL_CERT_DIR
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_cert is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_cert))
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot load the CA file {ca_cert}: {exc}",
                            code="bad-ca-file") from None
    if certs_dir is not None:
        # client certificates count even when verification is off
        _load_dir(ctx, certs_dir, verify=not insecure)
    return ctx

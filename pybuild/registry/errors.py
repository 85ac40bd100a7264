"""Typed registry errors: each names the registry, the repository and (when known) the digest.

They are user errors (bad reference, missing image, refused credentials, untrusted TLS, registry
down): the CLI renders `message` and `hint`; no traceback, and never a credential.
"""

from __future__ import annotations

import json
from typing import Any

from pybuild.errors import NotFoundError, UserError


class RegistryError(UserError):
    """Anything a registry refused, or could not be reached for."""

    code = "registry"

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        repository: str = "",
        digest: str = "",
        status: int | None = None,
        error_codes: tuple[str, ...] = (),
        code: str | None = None,
        hint: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.registry = registry
        self.repository = repository
        self.digest = digest
        self.status = status
        self.error_codes = error_codes
        # a fault that may go away on its own (5xx, 429, a reset or a timeout): the caller
        # may retry the whole operation (an upload from its start, a download from its end)
        self.transient = transient


class RegistryAuthError(RegistryError):
    """401/403: credentials missing, wrong, or without the needed permission."""

    code = "registry-auth"


class RegistryNotFoundError(RegistryError, NotFoundError):
    """The repository, tag, manifest or blob does not exist (also a NotFoundError)."""

    code = "registry-not-found"


class RegistryTLSError(RegistryError):
    """The TLS handshake failed (untrusted certificate, wrong host name, ...)."""

    code = "registry-tls"


class RegistryUnreachableError(RegistryError):
    """Connection refused, DNS failure, timeout."""

    code = "registry-unreachable"


class ManifestBlobUnknownError(RegistryError):
    """A manifest was refused because a blob it references is not in the repository."""

    code = "registry-manifest-blob-unknown"


def parse_error_body(body: bytes) -> list[dict[str, Any]]:
    """The `errors` array of a distribution-spec error body ([] if the body is not one)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return []
    return [e for e in data["errors"] if isinstance(e, dict)]


def describe_errors(errors: list[dict[str, Any]], limit: int = 3) -> str:
    """`CODE: message (detail)` for the first few registry errors, one line."""
    parts = []
    for err in errors[:limit]:
        text = f"{err.get('code', 'UNKNOWN')}: {err.get('message', '')}".rstrip(": ")
        detail = err.get("detail")
        if detail:
            if not isinstance(detail, str):
                detail = json.dumps(detail, sort_keys=True)
            if len(detail) > 200:
                detail = detail[:200] + "..."
            text += f" ({detail})"
        parts.append(text)
    return "; ".join(parts)

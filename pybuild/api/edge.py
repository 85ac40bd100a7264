"""The CLI's edge: its strings parsed into the request's values, and the registry settings
read from the flags, the environment and the standard locations. Embedders call these
too, to get what `pybuild` on the command line would use.

Environment read by `registry_options`: `PYBUILD_REGISTRY_RETRIES` (retries after the
first try, default 4), `PYBUILD_REGISTRY_TIMEOUT` (seconds without progress, default
120), `PYBUILD_CERTS_DIRS` (colon-separated certs.d bases instead of
~/.config/containers/certs.d, /etc/containers/certs.d and /etc/docker/certs.d),
`CONTAINERS_REGISTRIES_CONF`, `REGISTRY_AUTH_FILE`, `DOCKER_CONFIG`, `PATH` (for the
credential helpers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.builder.remote_cache import CacheOption
    from pybuild.exporters.base import OutputSpec
    from pybuild.frontend.resolver import NamedContext
    from pybuild.registry import RegistryOptions
    from pybuild.registry.endpoints import RegistryMirror


def parse_output(text: str) -> OutputSpec:
    """One `--output`/`-o` value, as buildx reads it."""
    from pybuild.exporters.base import parse_output as parse

    return parse(text)


def parse_cache_option(text: str, *, flag: str) -> CacheOption:
    """One `--cache-from` / `--cache-to` value (`flag` names which, for messages)."""
    from pybuild.builder.remote_cache import parse_cache_option as parse

    return parse(text, flag=flag)


def parse_named_context(value: str) -> NamedContext:
    """The VALUE of `--build-context NAME=VALUE`."""
    from pybuild.frontend.resolver import parse_named_context as parse

    return parse(value)


def _env_number(env: Mapping[str, str], name: str, default: float, *, minimum: float,
                integer: bool) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "a whole number" if integer else "a number"
        raise UserError(f"${name}={text!r}: expected {kind} >= {minimum:g}",
                        code="bad-environment")
    return value


def registry_options(*, creds: str | None = None, auth_file: str = "", insecure: bool = False,
                     ca_cert: str = "", mirrors: Sequence[str] = (),
                     root: Path | str | None = None,
                     environ: Mapping[str, str] | None = None) -> RegistryOptions:
    """Credentials, TLS, mirrors and retries for registries, as the CLI has them: `creds`
    is `USER:PASSWORD`; `auth_file` replaces the standard auth files; `mirrors` are
    `--registry-mirror` values; `root` (default: the default root) keeps the index of
    where blobs were seen, for cross-repository mounts. Nothing heavy is imported."""
    from pybuild.registry.locations import (
        auth_file_candidates,
        default_certs_dirs,
        registries_conf_locations,
    )
    from pybuild.registry.options import RegistriesConfFiles, RegistryOptions, RetryPolicy

    env = os.environ if environ is None else environ
    if creds is not None and ":" not in creds:
        raise UserError("--creds must be USER:PASSWORD")
    parsed_mirrors: tuple[RegistryMirror, ...] = ()
    if mirrors:
        from pybuild.registry.endpoints import RegistryMirror

        parsed_mirrors = tuple(RegistryMirror.parse(m) for m in mirrors)
    if root is None:
        from pybuild.content.paths import default_root

        root = default_root()
    main, dropins = registries_conf_locations(env)
    retries = int(_env_number(env, "PYBUILD_REGISTRY_RETRIES", 4, minimum=0, integer=True))
    return RegistryOptions(
        creds=creds,
        auth_files=(Path(auth_file),) if auth_file else tuple(auth_file_candidates(env)),
        insecure=insecure,
        ca_cert=Path(ca_cert) if ca_cert else None,
        timeout=_env_number(env, "PYBUILD_REGISTRY_TIMEOUT", 120.0, minimum=0.1,
                            integer=False),
        retry=RetryPolicy(attempts=retries + 1),
        certs_dirs=default_certs_dirs(env),
        helper_path=env.get("PATH"),
        registries=RegistriesConfFiles(main=main, dropin_dirs=dropins),
        mirrors=parsed_mirrors,
        blob_index=Path(root).absolute() / "cache" / "blob-sources.db",
    )


def dockerfile_ast(data: bytes, path: str) -> str:
    """The parse tree of a Dockerfile, in BuildKit's dump format."""
    from pybuild.frontend.dockerfile.dump import dump_ast
    from pybuild.frontend.dockerfile.parser import parse

    return dump_ast(parse(data, path))

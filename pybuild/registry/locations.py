"""Where docker and podman keep registry configuration, in a given environment.

Only the edge (the CLI) calls these, with its environment; the results are passed down as
values. Nothing here reads a file's contents, and nothing heavy is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthLocations:
    """The auth files to read (in order), the one a login writes, and the PATH credential
    helpers are looked up on (None: this process's)."""

    read: tuple[Path, ...]
    write: Path
    search_path: str | None = None


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def docker_config_file(env: Mapping[str, str]) -> Path:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return _home(env) / ".docker" / "config.json"


def auth_file_candidates(env: Mapping[str, str] | None = None) -> list[Path]:
    """Auth files in lookup order (they need not exist)."""
    env = os.environ if env is None else env
    out: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = (Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME")
                   else _home(env) / ".config")
    out.append(config_home / "containers" / "auth.json")
    out.append(docker_config_file(env))
    return out


def auth_locations(env: Mapping[str, str], authfile: Path | None = None) -> AuthLocations:
    """The locations docker and podman would use in this environment (read at the edge)."""
    search_path = env.get("PATH")
    if authfile is not None:
        return AuthLocations(read=(authfile,), write=authfile, search_path=search_path)
    read = tuple(auth_file_candidates(env))
    if env.get("REGISTRY_AUTH_FILE"):
        write = Path(env["REGISTRY_AUTH_FILE"])
    else:
        docker = docker_config_file(env)
        podman = [p for p in read if p != docker and p.exists()]
        write = docker if docker.exists() or not podman else podman[0]
    return AuthLocations(read=read, write=write, search_path=search_path)


def default_certs_dirs(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The certs.d bases in containers/image's order; `$PYBUILD_CERTS_DIRS` (colon-separated)
    replaces them (tests, or a runner that keeps them elsewhere). Read at the edge."""
    override = env.get("PYBUILD_CERTS_DIRS")
    if override is not None:
        return tuple(Path(p) for p in override.split(":") if p)
    home = _home(env)
    return (home / ".config" / "containers" / "certs.d", Path("/etc/containers/certs.d"),
            Path("/etc/docker/certs.d"))


def registries_conf_locations(env: Mapping[str, str]) -> tuple[Path, tuple[Path, ...]]:
    """podman's choice of file and drop-in directories in this environment (the edge)."""
    home = _home(env)
    user_file = home / ".config" / "containers" / "registries.conf"
    user_dir = home / ".config" / "containers" / "registries.conf.d"
    system_dir = Path("/etc/containers/registries.conf.d")
    if env.get("CONTAINERS_REGISTRIES_CONF"):
        return Path(env["CONTAINERS_REGISTRIES_CONF"]), (system_dir, user_dir)
    if user_file.exists():
        return user_file, (user_dir,)
    return Path("/etc/containers/registries.conf"), (system_dir, user_dir)

"""Registries without a build: `login`/`logout` (credentials kept where docker and podman
keep them) and `imagetools` (inspect remote images, make indexes from pushed ones). Pulls
and pushes of stored images are `Builder.pull`/`Builder.push`; the settings are
`registry_options` (`pybuild.api.edge`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pybuild.content.store import ContentStore
    from pybuild.registry.auth import Credentials
    from pybuild.registry.imagetools import Created, Inspected
    from pybuild.registry.locations import AuthLocations
    from pybuild.registry.login import LoginResult, LoginTarget
    from pybuild.registry.options import RegistryOptions


def login_target(server: str) -> LoginTarget:
    """`""` (docker.io), `docker.io`, `https://index.docker.io/v1/`, `host[:port][/path]`."""
    from pybuild.registry.login import LoginTarget

    return LoginTarget.parse(server)


def auth_locations(authfile: str = "", environ: Mapping[str, str] | None = None
                   ) -> AuthLocations:
    """Where credentials are read and stored: `authfile` only, or what docker and podman
    would use in this environment."""
    from pybuild.registry.locations import auth_locations as locations

    return locations(os.environ if environ is None else environ,
                     Path(authfile) if authfile else None)


def stored_credentials(target: LoginTarget, locations: AuthLocations) -> Credentials | None:
    """What an earlier login for `target` stored, if anything."""
    from pybuild.registry.authfiles import stored_credentials as stored

    return stored(target.domain, locations, repository=target.repository)


def credentials(username: str, password: str) -> Credentials:
    from pybuild.registry.auth import Credentials

    return Credentials(username, password)


def login(target: LoginTarget, creds: Credentials, locations: AuthLocations,
          options: RegistryOptions) -> LoginResult:
    """Check `creds` against the registry, then store them (a failed login stores
    nothing; `RegistryAuthError` says the registry refused them)."""
    from pybuild.registry.login import login as do_login
    from pybuild.registry.sync import run_sync

    return run_sync(do_login(target, creds, locations, options))


def logout(target: LoginTarget, locations: AuthLocations) -> list[str]:
    """Remove the stored credentials; returns where they were removed from."""
    from pybuild.registry.login import logout as do_logout

    return do_logout(target, locations)


def imagetools_inspect(name: str, options: RegistryOptions, *,
                       with_configs: bool = False) -> Inspected:
    """An image or index in a registry (`with_configs`: with each image's config)."""
    from pybuild.oci.reference import Reference
    from pybuild.registry.imagetools import inspect
    from pybuild.registry.sync import run_sync

    return run_sync(inspect(Reference.parse(name), options=options,
                            with_configs=with_configs))


def imagetools_create(sources: Sequence[str], tags: Sequence[str], store: ContentStore, *,
                      annotations: Sequence[str] = (), platforms: Sequence[str] = (),
                      append: bool = False, prefer_index: bool = True, dry_run: bool = False,
                      options: RegistryOptions) -> Created:
    """`docker buildx imagetools create`: an index from `sources` (tags, digests of the
    target repository, or descriptor JSON), pushed to every tag unless `dry_run`."""
    from pybuild.oci.platform import Platform
    from pybuild.oci.reference import Reference
    from pybuild.registry.imagetools import Annotation, Source, create
    from pybuild.registry.sync import run_sync

    return run_sync(create(
        [Source.parse(t) for t in sources], [Reference.parse(t) for t in tags], store,
        annotations=[Annotation.parse(a) for a in annotations],
        platforms=[Platform.parse(p) for part in platforms for p in part.split(",")],
        append=append, prefer_index=prefer_index, dry_run=dry_run, options=options))

"""Where a reference is pulled from and pushed to: mirrors, location rewrites, blocked and
insecure registries.

Pulls try, in order: the `--registry-mirror`s given for the reference's registry (buildkitd's
`mirrors`), the matching registries.conf entry's `[[registry.mirror]]`s (subject to
`mirror-by-digest-only` / `pull-from-mirror`), then the origin (the entry's `location`, else
the reference itself). Pushes go to the reference itself, never to a mirror (as podman and
BuildKit do); `blocked` refuses both, `insecure` allows plain HTTP and unverified TLS for
that endpoint only. Explicit `--creds` are only ever sent to the reference's own registry,
never to a mirror on another host (containers/image does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from pybuild.errors import UserError
from pybuild.oci.reference import Reference
from pybuild.registry.options import RegistriesConfFiles
from pybuild.registry.registries_conf import RegistriesConfig, RegistryEntry, resolve_config


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryMirror:
    """`--registry-mirror [REGISTRY=]LOCATION`: pull REGISTRY's images (default docker.io)
    from LOCATION (`host[:port][/path]`; an `http://` prefix allows plain HTTP)."""

    registry: str
    location: str
    insecure: bool = False

    @classmethod
    def parse(cls, text: str) -> RegistryMirror:
        registry, eq, location = text.partition("=")
        if not eq:
            registry, location = "docker.io", text
        insecure = False
        if location.startswith("http://"):
            location, insecure = location.removeprefix("http://"), True
        location = location.removeprefix("https://").rstrip("/")
        registry = registry.removeprefix("https://").removeprefix("http://").rstrip("/")
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = "docker.io"
        host = location.split("/", 1)[0]
        if not registry or not host or "@" in location or " " in text:
            raise UserError(f"invalid --registry-mirror {text!r}: use [REGISTRY=]HOST[:PORT]"
                            "[/PATH], e.g. docker.io=mirror.example.com:5000",
                            code="bad-registry-mirror")
        return cls(registry=registry, location=location, insecure=insecure)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One place to ask for an image: the reference there, and how to reach it."""

    reference: Reference
    insecure: bool = False
    mirror: bool = False


def _rewrite(ref: Reference, location: str, matched: int) -> Reference:
    name = location + ref.repository[matched:]
    suffix = (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")
    try:
        return Reference.parse(name + suffix)
    except UserError as exc:
        raise UserError(f"rewriting {ref} for {location!r} gives an invalid reference: "
                        f"{exc.message}", code="bad-registries-conf") from None


def _blocked(ref: Reference, entry: RegistryEntry) -> UserError:
    return UserError(f"registry {entry.prefix} is blocked in {entry.origin or 'registries.conf'}"
                     f" (pulling or pushing {ref.familiar} is not allowed)",
                     code="registry-blocked")


def pull_endpoints(ref: Reference, registries: RegistriesConfig | RegistriesConfFiles | None,
                   mirrors: tuple[RegistryMirror, ...] = ()) -> list[Endpoint]:
    """Mirrors first, the origin last."""
    config = resolve_config(registries)
    out: list[Endpoint] = []
    for m in mirrors:
        if m.registry == ref.domain:
            out.append(Endpoint(reference=_rewrite(ref, m.location, len(ref.domain)),
                                insecure=m.insecure, mirror=True))
    found = config.find(ref.repository) if config is not None else None
    if found is None:
        out.append(Endpoint(reference=ref))
        return out
    entry, matched = found
    if entry.blocked:
        raise _blocked(ref, entry)
    digested = ref.digest is not None
    for mirror in entry.mirrors:
        if entry.mirror_by_digest_only and not digested:
            continue
        if mirror.pull_from_mirror == "digest-only" and not digested:
            continue
        if mirror.pull_from_mirror == "tag-only" and digested:
            continue
        out.append(Endpoint(reference=_rewrite(ref, mirror.location, matched),
                            insecure=mirror.insecure, mirror=True))
    origin = _rewrite(ref, entry.location, matched) if entry.location else ref
    out.append(Endpoint(reference=origin, insecure=entry.insecure))
    return out


def push_endpoint(ref: Reference, registries: RegistriesConfig | RegistriesConfFiles | None
                  ) -> Endpoint:
    """The reference itself; registries.conf may block it or mark it insecure."""
    config = resolve_config(registries)
    found = config.find(ref.repository) if config is not None else None
    if found is None:
        return Endpoint(reference=ref)
    entry, _ = found
    if entry.blocked:
        raise _blocked(ref, entry)
    return Endpoint(reference=ref, insecure=entry.insecure)

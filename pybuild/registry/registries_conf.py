"""containers-registries.conf(5): mirrors, insecure and blocked registries, as podman reads them.

The file podman uses (`$CONTAINERS_REGISTRIES_CONF`, else `~/.config/containers/registries.conf`
if it exists, else `/etc/containers/registries.conf`) plus the `*.conf` drop-ins of its
`registries.conf.d` directories, merged as containers/image does: a later `[[registry]]` with
the same prefix replaces an earlier one. The v1 format (`[registries.insecure]`,
`[registries.block]`) is read too.

Applied: `[[registry]]` `prefix`, `location` (rewrites where pulls go), `insecure`, `blocked`,
`mirror-by-digest-only`, and `[[registry.mirror]]` `location`, `insecure`, `pull-from-mirror`.
Read but not applied, by decision: `unqualified-search-registries`, `short-name-mode`,
`[aliases]` — pybuild names images as docker and BuildKit do (`FROM alpine` is
`docker.io/library/alpine`); searching several registries for a short name lets whoever
registers it first on any of them choose the base image of a non-interactive build (the
squatting that podman's "enforcing" mode answers with a prompt a CI build cannot show), and
would make a Dockerfile mean different images under pybuild and buildx. `credential-helpers`
and `additional-layer-store-auth-helper` are podman's own. Any other key is an error that
names the file and suggests the key meant.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pybuild.errors import UserError
from pybuild.registry.options import RegistriesConfFiles

PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
_TOP_KEYS = frozenset({"registry", "unqualified-search-registries", "short-name-mode",
                       "credential-helpers", "additional-layer-store-auth-helper", "aliases",
                       "registries"})
_REGISTRY_KEYS = frozenset({"prefix", "location", "insecure", "blocked",
                            "mirror-by-digest-only", "mirror"})
_MIRROR_KEYS = frozenset({"location", "insecure", "pull-from-mirror"})
_V1_KEYS = frozenset({"search", "insecure", "block"})


class RegistriesConfError(UserError):
    code = "bad-registries-conf"


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorEntry:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[MirrorEntry, ...] = ()
    origin: str = ""  # the file it came from, for messages


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistriesConfig:
    registries: tuple[RegistryEntry, ...] = ()
    sources: tuple[str, ...] = ()  # the files read, for messages

    def find(self, name: str) -> tuple[RegistryEntry, int] | None:
        """The entry whose prefix matches `name` (`host/path[:tag][@digest]`) longest, with
        the length of the matched part."""
        best: tuple[RegistryEntry, int] | None = None
        for entry in self.registries:
            matched = match_prefix(name, entry.prefix)
            if matched >= 0 and (best is None or len(entry.prefix) > len(best[0].prefix)):
                best = (entry, matched)
        return best


def match_prefix(ref: str, prefix: str) -> int:
    """containers/image's `refMatchingPrefix`: the length of `ref` the prefix covers, -1 if it
    does not match (`example.com/a` matches `example.com/a/b` and `example.com/a:t`, not
    `example.com/ab`; `*.example.com` matches any subdomain's references)."""
    if prefix.startswith("*."):
        index = ref.find(prefix[1:])
        if index < 0 or "/" in ref[:index]:
            return -1
        index += len(prefix) - 1
        if index == len(ref) or ref[index] in ":/@":
            return index
        return -1
    if ref == prefix:
        return len(prefix)
    if ref.startswith(prefix) and ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def _unknown(keys: Sequence[str], known: frozenset[str], where: str) -> None:
    import difflib

    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RegistriesConfError(f"{where}: unknown key {key!r}{hint}")


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise RegistriesConfError(f"{where}: {key} must be true or false")
    return value


def _string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise RegistriesConfError(f"{where}: {key} must be a string")
    return value


def _location(value: str, where: str) -> str:
    value = value.rstrip("/")
    if value.startswith(("http://", "https://")):
        raise RegistriesConfError(f"{where}: invalid location {value!r}: URI schemes are not "
                                  "supported (use insecure = true for plain HTTP)")
    return value


def _registry(table: Any, where: str) -> RegistryEntry:
    if not isinstance(table, dict):
        raise RegistriesConfError(f"{where}: [[registry]] must be a table")
    _unknown(list(table), _REGISTRY_KEYS, where)
    location = _location(_string(table, "location", where), where)
    prefix = _location(_string(table, "prefix", where), where) or location
    if not prefix:
        raise RegistriesConfError(f"{where}: both location and prefix are unset")
    if not location and not prefix.startswith("*."):
        raise RegistriesConfError(f"{where}: location is unset and prefix {prefix!r} is not "
                                  "of the form *.example.com")
    by_digest = _bool(table, "mirror-by-digest-only", where)
    mirrors = []
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list):
        raise RegistriesConfError(f"{where}: mirror must be an array of tables "
                                  "([[registry.mirror]])")
    for i, m in enumerate(raw_mirrors):
        mwhere = f"{where} mirror {i + 1}"
        if not isinstance(m, dict):
            raise RegistriesConfError(f"{mwhere}: must be a table")
        _unknown(list(m), _MIRROR_KEYS, mwhere)
        mloc = _location(_string(m, "location", mwhere), mwhere)
        if not mloc:
            raise RegistriesConfError(f"{mwhere}: location is unset")
        pull_from = _string(m, "pull-from-mirror", mwhere) or "all"
        if pull_from not in PULL_FROM_MIRROR:
            raise RegistriesConfError(f"{mwhere}: unsupported pull-from-mirror {pull_from!r} "
                                      f"(use one of {', '.join(PULL_FROM_MIRROR)})")
        if by_digest and m.get("pull-from-mirror"):
            raise RegistriesConfError(f"{mwhere}: pull-from-mirror cannot be set when the "
                                      "registry has mirror-by-digest-only")
        mirrors.append(MirrorEntry(location=mloc, insecure=_bool(m, "insecure", mwhere),
                                   pull_from_mirror=pull_from))
    return RegistryEntry(prefix=prefix, location=location,
                         insecure=_bool(table, "insecure", where),
                         blocked=_bool(table, "blocked", where),
                         mirror_by_digest_only=by_digest, mirrors=tuple(mirrors))


def _v1(table: Any, where: str) -> list[RegistryEntry]:
    if not isinstance(table, dict):
        raise RegistriesConfError(f"{where}: [registries] must be a table")
    _unknown(list(table), _V1_KEYS, f"{where} [registries]")
    entries: dict[str, RegistryEntry] = {}
    for section, flag in (("block", "blocked"), ("insecure", "insecure")):
        sub = table.get(section, {})
        names = sub.get("registries", []) if isinstance(sub, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RegistriesConfError(f"{where}: [registries.{section}] registries must be "
                                      "a list of strings")
        for name in names:
            loc = _location(name, where)
            entry = entries.get(loc) or RegistryEntry(prefix=loc, location=loc)
            entries[loc] = (replace(entry, blocked=True) if flag == "blocked"
                            else replace(entry, insecure=True))
    return list(entries.values())


def parse_registries_conf(text: str, where: str) -> list[RegistryEntry]:
    import tomllib  # (here: options naming these files are made for every build)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistriesConfError(f"{where} is not valid TOML: {exc}") from None
    _unknown(list(data), _TOP_KEYS, where)
    out: list[RegistryEntry] = []
    if "registries" in data:
        if "registry" in data:
            raise RegistriesConfError(f"{where}: mixes the v1 [registries] tables with v2 "
                                      "[[registry]] entries")
        out.extend(_v1(data["registries"], where))
    raw = data.get("registry", [])
    if not isinstance(raw, list):
        raise RegistriesConfError(f"{where}: registry must be an array of tables "
                                  "([[registry]])")
    for i, table in enumerate(raw):
        out.append(_registry(table, f"{where} [[registry]] {i + 1}"))
    return [replace(e, origin=where) for e in out]


def _check_conflicts(entries: Sequence[RegistryEntry]) -> None:
    seen: dict[str, RegistryEntry] = {}
    for entry in entries:
        key = entry.location or entry.prefix
        other = seen.setdefault(key, entry)
        for attr in ("insecure", "blocked"):
            if getattr(other, attr) != getattr(entry, attr):
                raise RegistriesConfError(
                    f"registry {key!r} is defined several times with conflicting {attr!r} "
                    f"settings ({other.origin}, {entry.origin})")


def load_registries_conf(main: Path | None, dropin_dirs: Sequence[Path] = ()
                         ) -> RegistriesConfig:
    """The merged configuration of `main` (need not exist) and the drop-in directories."""
    files: list[Path] = []
    if main is not None:
        files.append(main)
    for d in dropin_dirs:
        try:
            files.extend(sorted(p for p in d.iterdir() if p.suffix == ".conf"))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    merged: dict[str, RegistryEntry] = {}
    sources: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise RegistriesConfError(f"cannot read {path}: {exc.strerror}") from None
        sources.append(str(path))
        for entry in parse_registries_conf(text, str(path)):
            merged[entry.prefix] = entry
    entries = [merged[k] for k in sorted(merged)]
    _check_conflicts(entries)
    return RegistriesConfig(registries=tuple(entries), sources=tuple(sources))


@functools.lru_cache(maxsize=8)
def _load_cached(main: Path | None, dropin_dirs: tuple[Path, ...]) -> RegistriesConfig:
    return load_registries_conf(main, dropin_dirs)


def load_cached(main: Path | None, dropin_dirs: tuple[Path, ...]) -> RegistriesConfig:
    """The merged configuration of these files, parsed once per process."""
    return _load_cached(main, dropin_dirs)


def resolve_config(value: RegistriesConfig | RegistriesConfFiles | None
                   ) -> RegistriesConfig | None:
    return value.load() if isinstance(value, RegistriesConfFiles) else value

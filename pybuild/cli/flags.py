"""Command-line strings parsed into the typed values a build takes, as buildx reads them
(`util/buildflags/*.go`, `commands/build.go`). Every key is checked: an unknown or
misspelt one is an error that names it and suggests the right one; a key buildx knows
and pybuild cannot honour is refused by name, never dropped."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.api import Annotation, NamedContext
    from pybuild.oci.platform import Platform
    from pybuild.request import Engine, PullPolicy, Secret, SSHAgent, Ulimit

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def suggest(word: str, choices: frozenset[str] | tuple[str, ...] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def go_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool; None if `text` is not a boolean."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def csv_fields(text: str, flag: str) -> list[str]:
    """buildx reads these values as one CSV record (`"a=b,c",d=e` has two fields)."""
    import csv

    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise UserError(f"invalid {flag} {text!r}: not a valid CSV record ({exc})",
                        code="bad-flag") from None
    return rows[0] if rows else []


def _pairs(text: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for field in csv_fields(text, flag):
        key, eq, value = field.partition("=")
        if not eq:
            raise UserError(f"invalid {flag} {text!r}: field {field!r} must be a key=value "
                            "pair", code="bad-flag")
        out.append((key.strip().lower(), value))
    return out


# -- --secret, --ssh ---------------------------------------------------------------------------

_SECRET_KEYS = ("type", "id", "src", "source", "env")


def parse_secret(text: str) -> Secret:
    """buildx's `--secret`: `id=ID[,src=FILE]`, `id=ID,env=VAR`, `type=env|file`; with
    neither src nor env, the variable named ID if it is set, else the file ID (BuildKit's
    secret store)."""
    from pybuild.request import Secret

    sid = src = env = kind = ""
    for key, value in _pairs(text, "--secret"):
        match key:
            case "type":
                if value not in ("file", "env"):
                    raise UserError(f"invalid --secret {text!r}: unsupported secret type "
                                    f"{value!r}{suggest(value, ('file', 'env'))}",
                                    code="bad-flag", hint="type is file or env")
                kind = value
            case "id":
                sid = value
            case "src" | "source":
                src = value
            case "env":
                env = value
            case _:
                raise UserError(f"invalid --secret {text!r}: unknown key {key!r}"
                                f"{suggest(key, _SECRET_KEYS)}", code="bad-flag",
                                hint="--secret takes id, src (or source), env and type")
    if kind == "env" and not env:
        env, src = src, ""
    if not sid:
        raise UserError(f"invalid --secret {text!r}: the secret has no id", code="bad-flag",
                        hint="e.g. --secret id=npmrc,src=$HOME/.npmrc")
    if src and env:
        raise UserError(f"invalid --secret {text!r}: give src or env, not both",
                        code="bad-flag")
    if env:
        return Secret.from_env(sid, env)
    if src:
        return Secret.from_file(sid, src)
    return Secret.from_id(sid)


def parse_ssh(text: str) -> SSHAgent:
    """buildx's `--ssh default|ID[=PATH[,PATH...]]`: one agent socket, or private key
    files (loaded into an agent of the build's own, see `pybuild.sshagents`); sockets and
    keys are not mixed, as in BuildKit's `sshprovider.toDialer`."""
    import stat

    from pybuild.request import SSHAgent

    sid, eq, joined = text.partition("=")
    if not sid:
        raise UserError(f"invalid --ssh {text!r}: use default or ID[=SOCKET|KEY,...]",
                        code="bad-flag")
    if sid.lower() in ("id", "src", "source", "type", "socket", "path") and eq:
        raise UserError(f"invalid --ssh {text!r}: --ssh takes ID[=SOCKET|KEY,...], not "
                        f"{sid}=VALUE", code="bad-flag",
                        hint="e.g. --ssh default, --ssh mykey=$SSH_AUTH_SOCK or "
                             "--ssh git=$HOME/.ssh/id_ed25519")
    paths = [p for p in joined.split(",")] if joined else []
    if paths == [""]:
        paths = []
    sockets: list[str] = []
    keys: list[str] = []
    for path in paths:
        if not path:
            raise UserError(f"invalid --ssh {text!r}: an empty path", code="bad-flag")
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise UserError(f"--ssh {sid}: {path}: {exc.strerror}", code="bad-flag") from None
        if stat.S_ISSOCK(mode):
            if sockets:
                raise UserError(f"--ssh {text}: only single socket allowed", code="bad-flag")
            sockets.append(path)
        elif stat.S_ISREG(mode):
            keys.append(path)
        else:
            raise UserError(f"--ssh {sid}: {path} is not an agent socket nor a key file",
                            code="bad-flag")
    if sockets and keys:
        raise UserError(f"--ssh {text}: invalid combination of keys and sockets",
                        code="bad-flag", hint="give one agent socket, or key files")
    return SSHAgent(id=sid, socket=sockets[0] if sockets else "", keys=tuple(keys))


# -- --build-context ---------------------------------------------------------------------------

_CONTEXT_SCHEMES = ("docker-image://", "oci-layout://", "local:", "target:", "input:")


def parse_build_context(text: str) -> tuple[str, NamedContext]:
    """`--build-context NAME=VALUE`: VALUE is a directory, `docker-image://REF`,
    `oci-layout://DIR[:TAG][@DIGEST]`, a git URL or an http(s) URL. The name is
    normalised as buildx does (`docker.io/library/alpine:latest` is `alpine`)."""
    from pybuild.api import NamedContext
    from pybuild.gitref import is_http_url, parse_git_ref
    from pybuild.oci.reference import Reference

    name, eq, value = text.partition("=")
    if not eq or not name or not value:
        raise UserError(f"invalid --build-context {text!r}: expected NAME=VALUE",
                        code="bad-flag")
    try:
        name = Reference.parse(name).familiar.removesuffix(":latest")
    except UserError:
        raise UserError(f"invalid --build-context name {name!r}: a context is named like "
                        "an image (lower case)", code="bad-flag") from None
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", value)
    if value.startswith(("target:", "input:")):
        raise UserError(f"--build-context {text}: {value.split(':')[0]}: contexts exist in "
                        "buildx bake only", code="unsupported-flag")
    from pybuild.api import parse_named_context

    if is_http_url(value) or parse_git_ref(value) is not None:
        return name, NamedContext(kind="git" if parse_git_ref(value) else "http", value=value)
    if scheme and f"{scheme.group(1)}://" not in _CONTEXT_SCHEMES:
        written = scheme.group(1) + "://"
        raise UserError(f"invalid --build-context {text!r}: unknown source {written!r}"
                        f"{suggest(written, _CONTEXT_SCHEMES)}", code="bad-flag",
                        hint="use a directory, docker-image://REF, oci-layout://DIR@DIGEST, "
                             "a git URL or an https URL")
    try:
        return name, parse_named_context(value)
    except UserError as exc:
        raise UserError(f"--build-context {text}: {exc.message}", code="bad-flag",
                        hint=exc.hint) from None


# -- --cache-from / --cache-to -----------------------------------------------------------------

# The keys each (direction, type) honours; BuildKit keys pybuild cannot honour, and the
# value it always has for those it implements one way only.
_CACHE_KEYS: dict[tuple[str, str], frozenset[str]] = {
    ("--cache-to", "registry"): frozenset({"type", "ref", "mode", "compression",
                                           "ignore-error"}),
    ("--cache-to", "local"): frozenset({"type", "dest", "mode", "compression", "tag",
                                        "ignore-error"}),
    ("--cache-from", "registry"): frozenset({"type", "ref"}),
    ("--cache-from", "local"): frozenset({"type", "src", "digest", "tag"}),
}
_CACHE_FIXED = {"oci-mediatypes": True, "image-manifest": True}  # always so in pybuild
_CACHE_REFUSED = {
    "compression-level": "layers are compressed at the default level",
    "force-compression": "layers already compressed as asked are not recompressed",
    "registry.insecure": "use --insecure for plain-HTTP or self-signed registries",
}
_BOOL_CACHE_KEYS = frozenset({"ignore-error", *_CACHE_FIXED})


def check_cache_option(text: str, flag: str) -> list[str]:
    """`--cache-from` / `--cache-to` values with every key checked (buildx's
    `ParseCacheEntry`), normalised for `cache.remote.parse_cache_option`: booleans as
    `true`/`false`, and a list of bare refs (`a,b`) split into one value each."""
    text = text.strip()
    if not text:
        raise UserError(f"{flag}: empty value", code="bad-flag")
    if "=" not in text:
        return [f.strip() for f in csv_fields(text, flag) if f.strip()]
    pairs = _pairs(text, flag)
    attrs = dict(pairs)
    if len(attrs) != len(pairs):
        raise UserError(f"invalid {flag} {text!r}: a key is given twice", code="bad-flag")
    kind = attrs.get("type", "registry" if "ref" in attrs else "")
    if (flag, kind) not in _CACHE_KEYS:
        return [text]  # an unknown or unsupported type: the cache parser says which
    allowed = _CACHE_KEYS[(flag, kind)]
    other = "--cache-from" if flag == "--cache-to" else "--cache-to"
    out = []
    for key, value in pairs:
        if key in _CACHE_REFUSED:
            raise UserError(f"{flag} {key}= is not supported: {_CACHE_REFUSED[key]}",
                            code="unsupported-flag")
        if key in _BOOL_CACHE_KEYS:
            parsed = go_bool(value)
            if parsed is None:
                raise UserError(f"invalid {flag} {text!r}: {key}={value!r} is not a boolean",
                                code="bad-flag", hint="use true or false")
            if key in _CACHE_FIXED:
                if parsed != _CACHE_FIXED[key]:
                    raise UserError(f"{flag} {key}={value} is not supported: pybuild's cache "
                                    "is an OCI image manifest with OCI media types",
                                    code="unsupported-flag")
                continue
            value = "true" if parsed else "false"
        elif key not in allowed:
            if key in _CACHE_KEYS.get((other, kind), frozenset()):
                raise UserError(f"invalid {flag} {text!r}: {key}= is a key of {other}",
                                code="bad-flag", hint=f"{flag} type={kind} takes "
                                f"{', '.join(sorted(allowed - {'type'}))}")
            known = allowed | frozenset(_CACHE_FIXED)
            raise UserError(f"invalid {flag} {text!r}: unknown key {key!r}"
                            f"{suggest(key, tuple(known))}", code="bad-flag",
                            hint=f"{flag} type={kind} takes "
                                 f"{', '.join(sorted(known - {'type'}))}")
        out.append(f"{key}={value}")
    return [",".join(out)]


# -- --annotation, --label, --add-host, --shm-size, --ulimit -----------------------------------

_ANNOTATION_TYPE = re.compile(r"^([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?$")


def parse_annotation(text: str) -> list[Annotation]:
    """buildx's `--annotation [TYPE[[PLATFORM]][,TYPE...]:]KEY=VALUE` (`ParseAnnotations`);
    no type is the manifest's."""
    from pybuild.api import Annotation, annotation_of

    key, eq, value = text.partition("=")
    if not eq:
        raise UserError(f"invalid --annotation {text!r}: expected KEY=VALUE", code="bad-flag")
    types, colon, akey = key.partition(":")
    if not colon:
        return [Annotation(level="manifest", key=key, value=value)]
    out = []
    for spec in types.split(","):
        m = _ANNOTATION_TYPE.match(spec)
        if m is None:
            raise UserError(f"invalid --annotation type {spec!r}: expected a type and an "
                            "optional platform in square brackets", code="bad-flag")
        level, platform = m.groups()
        out.append(annotation_of(akey, value, platform_text=platform, level_text=level,
                                 where=f"--annotation {text}"))
    return out


def parse_add_host(text: str) -> list[tuple[str, str]]:
    """docker's `--add-host HOST:IP` (also `HOST=IP`; IPv6 in brackets or bare)."""
    import ipaddress

    out = []
    for item in text.split(","):
        host, sep, ip = item.partition("=")
        if not sep:
            host, sep, ip = item.partition(":")
        ip = ip.strip("[]")
        if not host or not sep or not ip:
            raise UserError(f"invalid --add-host {item!r}: expected HOST:IP", code="bad-flag")
        if ip != "host-gateway":
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise UserError(f"invalid --add-host {item!r}: {ip!r} is not an IP address",
                                code="bad-flag") from None
        out.append((host, ip))
    return out


_ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
            "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")


def parse_ulimit(text: str) -> Ulimit:
    """docker's `--ulimit NAME=SOFT[:HARD]`."""
    from pybuild.request import Ulimit

    name, eq, limits = text.partition("=")
    if not eq:
        raise UserError(f"invalid --ulimit {text!r}: expected NAME=SOFT[:HARD]",
                        code="bad-flag")
    if name not in _ULIMITS:
        raise UserError(f"invalid --ulimit {text!r}: unknown limit {name!r}"
                        f"{suggest(name, _ULIMITS)}", code="bad-flag")
    soft_text, _, hard_text = limits.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise UserError(f"invalid --ulimit {text!r}: limits are integers", code="bad-flag"
                        ) from None
    if soft > hard and hard != -1:
        raise UserError(f"invalid --ulimit {text!r}: the soft limit exceeds the hard one",
                        code="bad-flag")
    return Ulimit(name=name, soft=soft, hard=hard)


# -- --platform, --pull, --load ----------------------------------------------------------------


def parse_platforms(values: list[str] | None) -> tuple[Platform, ...]:
    """Every `--platform` (repeatable, each comma-separated, as buildx joins them);
    `local` is this host's platform."""
    from pybuild.oci.platform import Platform, host

    out: list[Platform] = []
    for value in values or ():
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            out.append(host() if item == "local" else Platform.parse(item))
    return tuple(dict.fromkeys(out))


def parse_pull(value: str) -> PullPolicy:
    """buildx's boolean `--pull` (true: re-resolve every base image; false: the default)
    and podman's policies (always, missing, never)."""
    if value in ("always", "missing", "never"):
        return value  # type: ignore[return-value]
    parsed = go_bool(value)
    if parsed is None:
        raise UserError(f"invalid --pull value {value!r}"
                        f"{suggest(value, ('always', 'missing', 'never', 'true', 'false'))}",
                        code="bad-flag",
                        hint="--pull (or --pull=true) re-pulls every base image; "
                             "--pull=false or missing uses the store's; never never pulls")
    return "always" if parsed else "missing"


def parse_load(value: str) -> Engine | None:
    """`--load` (the installed engine), `--load=podman|docker`, `--load=false`."""
    if value in ("auto", "podman", "docker"):
        return value  # type: ignore[return-value]
    parsed = go_bool(value)
    if parsed is None:
        raise UserError(f"invalid --load value {value!r}"
                        f"{suggest(value, ('podman', 'docker'))}", code="bad-flag",
                        hint="--load, --load=podman or --load=docker")
    return "auto" if parsed else None

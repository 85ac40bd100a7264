"""`RUN --mount=...` option parsing (BuildKit's instructions/commands_runmount.go).

BuildKit parses each `--mount` twice: once when the instruction is parsed, with no
expander (only `from` is looked at: a `$` in it is an error), and again at dispatch with
an expander bound to the stage's environment at that point (every value is expanded).
`parse_mount(spec, None)` is the first pass, `parse_mount(spec, expand)` the second.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from pybuild.errors import UserError
from pybuild.frontend.suggest import with_suggestion
from pybuild.gocompat import go_parse_bool

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_ALL_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size",
    "mode", "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)

Expander = Callable[[str], str]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMount:
    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    readonly: bool = False
    size: int = 0
    id: str = ""
    sharing: str = ""  # "" = not given (shared)
    required: bool = False
    env: str | None = None  # secret exposed as this environment variable
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


def _parse_bool(value: str, key: str) -> bool:
    try:
        return go_parse_bool(value)
    except ValueError:
        raise UserError(f"invalid value for {key}: {value}") from None


def _parse_uint(value: str, base: int, bits: int) -> int:
    """Go's strconv.ParseUint (no sign, no underscores for an explicit base)."""
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value):
        raise ValueError(value)
    n = int(value, base)
    if n >= 2**bits:
        raise ValueError(value)
    return n


_RAM = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtpKMGTP]?)[iI]?[bB]?$")


def ram_in_bytes(text: str) -> int:
    """docker/go-units RAMInBytes: binary multipliers, optional `i`/`b` suffix."""
    m = _RAM.match(text)
    if m is None:
        raise ValueError(text)
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    return int(float(m.group(1)) * mult[m.group(2).lower()])


def _fields(spec: str) -> list[str]:
    try:
        rows = list(csv.reader([spec], strict=True))
    except csv.Error as exc:
        raise UserError(f"failed to parse csv mounts: {exc}") from None
    return rows[0] if rows else []


def parse_mount(spec: str, expand: Expander | None) -> RunMount:
    """One `--mount` value; `expand` is None for the parse-time pass."""
    m = RunMount()
    ro_auto = True
    for field in _fields(spec):
        key, eq, value = field.partition("=")
        key = key.lower()
        if not eq:
            if expand is None:
                continue  # evaluated later
            if key in ("readonly", "ro"):
                m, ro_auto = replace(m, readonly=True), False
                continue
            if key in ("readwrite", "rw"):
                m, ro_auto = replace(m, readonly=False), False
                continue
            if key == "required":
                if m.type in ("secret", "ssh"):
                    m = replace(m, required=True)
                    continue
                raise UserError(f"unexpected key '{key}' for mount type '{m.type}'")
            raise UserError(f"invalid field '{field}' must be a key=value pair")
        if expand is not None:
            value = expand(value)
        elif key == "from":
            idx = value.find("$")
            if idx != -1 and idx != len(value) - 1:
                raise UserError(f"'{key}' doesn't support variable expansion, define alias "
                                "stage instead")
        else:
            continue
        match key:
            case "type":
                v = value.lower()
                if v not in MOUNT_TYPES:
                    raise UserError(with_suggestion(f'unsupported mount type "{value}"', value,
                                               MOUNT_TYPES))
                m = replace(m, type=v)
            case "from":
                m = replace(m, from_=value)
            case "source" | "src":
                m = replace(m, source=value)
            case "target" | "dst" | "destination":
                m = replace(m, target=value)
            case "readonly" | "ro":
                m, ro_auto = replace(m, readonly=_parse_bool(value, key)), False
            case "readwrite" | "rw":
                m, ro_auto = replace(m, readonly=not _parse_bool(value, key)), False
            case "required":
                if m.type not in ("secret", "ssh"):
                    raise UserError(f"unexpected key '{key}' for mount type '{m.type}'")
                m = replace(m, required=_parse_bool(value, key))
            case "size":
                if m.type != "tmpfs":
                    raise UserError(f"unexpected key '{key}' for mount type '{m.type}'")
                try:
                    m = replace(m, size=ram_in_bytes(value))
                except ValueError:
                    raise UserError(f"invalid value for {key}: {value}") from None
            case "id":
                m = replace(m, id=value)
            case "sharing":
                v = value.lower()
                if v not in SHARING_MODES:
                    raise UserError(with_suggestion(f'unsupported sharing value "{value}"', value,
                                               SHARING_MODES))
                m = replace(m, sharing=v)
            case "mode" | "uid" | "gid":
                try:
                    n = _parse_uint(value, 8 if key == "mode" else 10, 32)
                except ValueError:
                    raise UserError(f"invalid value {value} for {key}") from None
                if key == "mode":
                    m = replace(m, mode=n)
                elif key == "uid":
                    m = replace(m, uid=n)
                else:
                    m = replace(m, gid=n)
            case "env":
                m = replace(m, env=value)
            case _:
                raise UserError(with_suggestion(f"unexpected key '{key}' in '{field}'", key,
                                           _ALL_KEYS))
    if m.type not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if getattr(m, key) is not None:
                raise UserError(f'{key} not allowed for "{m.type}" type mounts')
    if ro_auto:
        m = replace(m, readonly=m.type not in ("cache", "tmpfs"))
    if m.type == "secret":
        if m.from_:
            raise UserError("secret mount should not have a from")
        if m.sharing:
            raise UserError("secret mount should not define sharing")
        if not m.source and not m.target and not m.id:
            raise UserError("invalid secret mount. one of source, target required")
        if m.source and m.id:
            raise UserError("both source and id can't be set")
    if m.sharing and m.type != "cache":
        raise UserError(f"invalid cache sharing set for {m.type} mount")
    return m

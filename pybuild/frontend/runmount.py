"""`RUN --mount=...` option parsing (BuildKit's instructions/commands_runmount.go)."""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass

from pybuild.errors import UserError

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_KEYS = (
    "type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro",
    "readwrite", "rw", "id", "sharing", "mode", "uid", "gid", "size", "required", "env",
)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMount:
    type: str
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int = 0
    required: bool = False
    env: str = ""


def _bool(value: str | None, key: str) -> bool:
    if value is None or value == "":
        return True
    v = value.lower()
    if v in ("true", "1", "t"):
        return True
    if v in ("false", "0", "f"):
        return False
    raise UserError(f"invalid value for {key}: {value}")


def parse_size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise UserError(f"invalid size value {text!r}")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
    return int(float(m.group(1)) * mult[m.group(2).lower()])


def parse_run_mount(spec: str, expand: callable, workdir: str) -> RunMount:  # type: ignore[valid-type]
    """Parse one --mount value. `expand` expands option values (not `from`)."""
    try:
        fields = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        raise UserError(f"invalid mount spec {spec!r}") from None
    kv: dict[str, str | None] = {}
    for f in fields:
        key, eq, value = f.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            from difflib import get_close_matches

            close = get_close_matches(key, _KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"unexpected key '{key}' in '{f}'{hint}")
        kv[key] = value if eq else None
    mtype = (kv.get("type") or "bind").lower()
    if mtype not in MOUNT_TYPES:
        from difflib import get_close_matches

        close = get_close_matches(mtype, MOUNT_TYPES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unsupported mount type {mtype!r}{hint}")

    def val(*names: str) -> str:
        for n in names:
            if n in kv and kv[n] is not None:
                return expand(kv[n])
        return ""

    from_ = kv.get("from") or ""
    if "$" in from_:
        raise UserError("'from' doesn't support variable expansion, define alias stage instead")
    target = val("target", "dst", "destination")
    source = val("source", "src")
    if mtype == "secret" and "source" in kv and "id" in kv:
        raise UserError("both source and id can't be set")
    mid = val("id")
    if mtype == "secret" and not mid:
        mid = source
    readonly = mtype in ("bind",)
    if "readonly" in kv or "ro" in kv:
        readonly = _bool(kv.get("readonly", kv.get("ro")), "readonly")
    if "readwrite" in kv or "rw" in kv:
        readonly = not _bool(kv.get("readwrite", kv.get("rw")), "readwrite")
    env = val("env")
    if not target:
        if mtype == "secret":
            if not mid and not env:
                raise UserError("one of source, target or env required for secret mount")
            target = f"/run/secrets/{mid}" if not env else ""
        elif mtype == "ssh":
            target = ""
        else:
            raise UserError("mount target is required")
    if target and not target.startswith("/"):
        target = posixpath.join(workdir or "/", target)
    if target:
        target = posixpath.normpath(target)
        if target == "/":
            raise UserError("invalid mount target \"/\"")
    if mtype == "secret" and not mid:
        mid = posixpath.basename(target)
    if mtype == "ssh" and not mid:
        mid = "default"
    if mtype == "cache" and not mid:
        mid = target
    sharing = (val("sharing") or "shared").lower()
    if "sharing" in kv and mtype != "cache":
        raise UserError("sharing is only allowed for cache mounts")
    if sharing not in ("shared", "private", "locked"):
        raise UserError(f"unsupported sharing value {sharing!r}")
    for key in ("mode", "uid", "gid"):
        if key in kv and mtype not in ("cache", "secret", "ssh"):
            raise UserError(f"{key} is only allowed for cache, secret and ssh mounts")
    if "size" in kv and mtype != "tmpfs":
        raise UserError("size is only allowed for tmpfs mounts")
    if source and mtype == "ssh":
        raise UserError("source is not allowed for ssh mounts")
    if from_ and mtype in ("secret", "ssh", "tmpfs"):
        raise UserError(f"from is not allowed for {mtype} mounts")
    mode = None
    if kv.get("mode") is not None:
        try:
            mode = int(val("mode"), 8)
        except ValueError:
            raise UserError(f"invalid mode {kv['mode']!r}: expecting an octal value") from None
    uid = _int(val("uid"), "uid") if kv.get("uid") is not None else None
    gid = _int(val("gid"), "gid") if kv.get("gid") is not None else None
    size = parse_size(val("size")) if kv.get("size") is not None else 0
    required = _bool(kv.get("required"), "required") if "required" in kv else False
    return RunMount(type=mtype, target=target, source=source, from_=from_, readonly=readonly,
                    id=mid, sharing=sharing, mode=mode, uid=uid, gid=gid, size=size,
                    required=required, env=env)


def _int(text: str, key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"invalid {key} value {text!r}") from None

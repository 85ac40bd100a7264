"""A portable archive of build records (`history export` / `history import`).

A gzip'ed tar: `pybuild-history.json` (format, version, refs), then for each record
`<ref>/header.json`, `<ref>/events.jsonl`, `<ref>/final.json` (absent for a killed
build), and `<ref>/timeline.html`, the picture, for whoever receives it without pybuild.
Records hold no secrets (the recorder masked them), so neither does an archive.

Import trusts nothing: only those member names, regular files, bounded sizes, a header
that parses; each record lands under a fresh `.tmp-` name and is renamed into place.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path
from typing import BinaryIO

from pybuild.errors import UserError
from pybuild.history import store
from pybuild.history.model import SCHEMA_VERSION

FORMAT = "pybuild-history"
MANIFEST = "pybuild-history.json"
_MEMBER = re.compile(r"^([a-z0-9]{1,64})/(header\.json|events\.jsonl|final\.json|"
                     r"timeline\.html)$")
_MAX_MEMBER = 512 * 1024 * 1024
_MAX_RECORDS = 10_000


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def export_records(record_dirs: list[Path], dest: BinaryIO | Path) -> int:
    """Writes an archive of the given (finished) records; returns how many it holds."""
    from pybuild.history.trace_html import render_html

    for d in record_dirs:
        if store.lock_held(d):
            raise UserError(f"build {d.name} is still running; export it when it has ended")
    now = time.time()
    target: BinaryIO
    opened = None
    if isinstance(dest, Path):
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            opened = open(tmp, "wb")  # noqa: SIM115 (closed or removed below)
        except OSError as exc:
            raise UserError(f"cannot write {dest}: {exc.strerror}") from None
        target = opened
    else:
        target = dest
    try:
        with tarfile.open(fileobj=target, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            refs = [d.name for d in record_dirs]
            _add(tar, MANIFEST, json.dumps({"format": FORMAT, "version": SCHEMA_VERSION,
                                            "records": refs}).encode(), now)
            for d in record_dirs:
                for name in (store.HEADER, store.EVENTS, store.FINAL):
                    try:
                        with open(d / name, "rb") as f:
                            data = f.read()
                    except FileNotFoundError:
                        if name == store.FINAL:
                            continue  # a killed build: the archive says so by its absence
                        raise UserError(f"build record {d.name} is incomplete") from None
                    _add(tar, f"{d.name}/{name}", data, now)
                _add(tar, f"{d.name}/timeline.html",
                     render_html(store.load(d)).encode(), now)
        if opened is not None:
            opened.close()
            os.replace(opened.name, dest)  # type: ignore[arg-type]
            opened = None
    finally:
        if opened is not None:
            opened.close()
            with contextlib.suppress(OSError):
                os.unlink(opened.name)
    return len(record_dirs)


def _open_tar(source: BinaryIO | Path) -> tarfile.TarFile:
    if isinstance(source, Path):
        return tarfile.open(source, mode="r:*")
    return tarfile.open(fileobj=source, mode="r|*")  # a stream: read once, in order


def import_records(root: Path, source: BinaryIO | Path) -> list[str]:
    """Adds the records of an archive to `root`'s history; returns their refs. A record
    already there (same ref) is skipped."""
    base = store.history_root(root)
    base.mkdir(parents=True, exist_ok=True)
    what = str(source) if isinstance(source, Path) else "the archive"
    files: dict[str, dict[str, bytes]] = {}
    manifest = None
    try:
        with _open_tar(source) as tar:
            for member in tar:
                if member.name == MANIFEST and member.isfile() and member.size < 1 << 20:
                    f = tar.extractfile(member)
                    manifest = json.loads(f.read()) if f is not None else None
                    continue
                m = _MEMBER.match(member.name)
                if m is None or not member.isfile():
                    raise UserError(f"{what}: unexpected member {member.name!r}")
                if member.size > _MAX_MEMBER:
                    raise UserError(f"{what}: {member.name} is too large")
                if len(files) >= _MAX_RECORDS and m.group(1) not in files:
                    raise UserError(f"{what}: too many records")
                f = tar.extractfile(member)
                files.setdefault(m.group(1), {})[m.group(2)] = f.read() if f else b""
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise UserError(f"{what} is not a readable pybuild history archive: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{what} is not a pybuild history archive (no {MANIFEST})")
    if manifest.get("version") != SCHEMA_VERSION:
        raise UserError(f"{what}: unsupported history format version "
                        f"{manifest.get('version')!r}")
    imported = []
    for ref, members in files.items():
        header = members.get(store.HEADER)
        try:
            parsed = json.loads(header) if header is not None else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or parsed.get("schema") != SCHEMA_VERSION \
                or store.EVENTS not in members:
            raise UserError(f"{what}: record {ref} is incomplete or unreadable")
        if (base / ref).exists():
            continue
        tmp = base / f".tmp-import-{ref}"
        store._rmtree(tmp)
        tmp.mkdir(mode=0o700)
        for name in (store.HEADER, store.EVENTS, store.FINAL):
            if name in members:
                (tmp / name).write_bytes(members[name])
        try:
            os.rename(tmp, base / ref)
        except OSError:
            store._rmtree(tmp)
            continue
        imported.append(ref)
    return imported

"""Cache keys, and why a step's key missed.

An op's key is H(scheme, op digest, its inputs' keys, the content digests of the local files
it reads, SOURCE_DATE_EPOCH when set): the op digest pins the instruction; the input keys
pin what it runs on; content digests (not mtimes) make a fresh clone hit; the epoch is in
because it changes every layer a step commits (its mtimes).

A miss is explained against the last record of the same step (`StepId`: the Dockerfile,
the stage, the step's number and the platform it is built for), by the part of the key
that differs: an input (named by the step or source that made it), context files, the
environment, or the instruction itself (its own definition, with its inputs masked).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pybuild.cache.store import CacheRecord
from pybuild.digest import Digest
from pybuild.llb import CopyAction, ExecOp, FileOp, Input, MergeOp, Op, OpMetadata, op_digest

# v2: steps that change nothing keep their (empty) layer, as current BuildKit does, and
# SOURCE_DATE_EPOCH is part of the key; records of v1 would say otherwise.
KEY_SCHEME = "pybuild-cache-v2"

CacheKey = str  # "sha256:…" (an opaque digest to the cache)
_MASK = Input(op=Digest("sha256:" + "0" * 64))


@dataclass(frozen=True, slots=True, kw_only=True)
class StepId:
    """Which step of which build a record belongs to, for explanations: the Dockerfile
    (absolute), the stage, the step's label (`[build 2/4]`) and the platform it is built
    for. Keys never contain it: a clone elsewhere still hits."""

    dockerfile: str
    stage: str
    label: str
    platform: str

    def __str__(self) -> str:
        return f"{self.dockerfile}|{self.stage}|{self.label}|{self.platform}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheMap:
    """What an op says about its own caching (BuildKit's `solver.CacheMap`).

    `content`: selector -> content digest of the local files the op reads (hashed);
    `file_lists`: selector -> {path: digest}, for naming changed files (not hashed);
    `prepared`: what the op's handler worked out for the key and may reuse to execute (a
    context selection, a layer written ahead); never part of the key."""

    content: tuple[tuple[str, str], ...] = ()
    file_lists: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    prepared: Any = None


def cache_key(op_dig: Digest, input_keys: Sequence[CacheKey], cmap: CacheMap,
              epoch: int | None) -> CacheKey:
    parts: list[Any] = [KEY_SCHEME, str(op_dig), list(input_keys), dict(cmap.content)]
    if epoch is not None:
        parts.append({"source_date_epoch": epoch})
    return _hash(parts)


def source_key(op_dig: Digest, identity: str = "") -> CacheKey:
    """A source's key: its op digest, plus what it fetched (a download's digest, a
    commit) when that is not pinned by the op."""
    return _hash([KEY_SCHEME, str(op_dig), identity] if identity else [KEY_SCHEME,
                                                                        str(op_dig)])


def own_digest(op: Op) -> str:
    """The op's digest with its inputs masked: what changes only when the instruction
    itself (its command, its options) does."""
    match op:
        case ExecOp():
            masked: Op = dataclasses.replace(
                op, rootfs=_MASK if op.rootfs is not None else None,
                mounts=tuple(dataclasses.replace(m, input=_MASK) if m.input is not None
                             else m for m in op.mounts))
        case MergeOp():
            masked = MergeOp(sources=tuple(_MASK for _ in op.sources))
        case FileOp():
            masked = dataclasses.replace(
                op, base=_MASK if op.base is not None else None,
                actions=tuple(dataclasses.replace(a, source=_MASK)
                              if isinstance(a, CopyAction) else a for a in op.actions))
        case _:
            masked = op
    return str(op_digest(masked))


def key_parts(op: Op, input_keys: Sequence[CacheKey], input_names: Sequence[str],
              cmap: CacheMap, epoch: int | None) -> dict[str, Any]:
    """What a record keeps of its key, for the next miss's explanation."""
    parts: dict[str, Any] = {"own": own_digest(op), "inputs": list(input_keys),
                             "input_names": list(input_names), "files": dict(cmap.content)}
    if cmap.file_lists:
        parts["file_list"] = {k: dict(v) for k, v in cmap.file_lists.items()}
    if isinstance(op, ExecOp):
        parts["env"] = list(op.env)
    if epoch is not None:
        parts["epoch"] = epoch
    return parts


def explain_miss(previous: CacheRecord | None, parts: dict[str, Any],
                 meta: OpMetadata) -> str:
    """Which part of the key differs from the last record of the same step."""
    if previous is None:
        return "first build of this step"
    old = previous.parts
    if "own" not in old:
        return "recorded by an older pybuild (its cache is not reused)"
    if old["own"] != parts["own"]:
        if old.get("env") != parts.get("env") and old.get("env") is not None:
            return _changed_env(old.get("env", []), parts.get("env", []))
        was = _text(previous.description)
        now = meta.text or _text(meta.description)
        if was != now:
            return f"the instruction changed (was: {was})"
        return "the instruction's options changed"
    if old.get("inputs") != parts.get("inputs"):
        names = parts.get("input_names") or []
        pairs = zip(old.get("inputs", []), parts.get("inputs", []), strict=False)
        changed = [names[i] for i, (a, b) in enumerate(pairs) if a != b and i < len(names)]
        if changed and old.get("input_names") == names:
            return "changed input: " + ", ".join(dict.fromkeys(changed))
        return "an earlier step or the base image changed"
    if old.get("files") != parts.get("files"):
        changed = _changed_files(old.get("file_list", {}), parts.get("file_list", {}))
        if changed:
            return "context files changed: " + ", ".join(changed[:5]) + (
                f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return "context files changed"
    if old.get("epoch") != parts.get("epoch"):
        return (f"SOURCE_DATE_EPOCH changed ({old.get('epoch', 'unset')} -> "
                f"{parts.get('epoch', 'unset')})")
    return "the previous result was removed from the cache"


def _text(description: str) -> str:
    return description.split("] ", 1)[-1]


def _changed_files(old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]) -> list[str]:
    out: list[str] = []
    for idx, files in new.items():
        before = old.get(idx, {})
        for rel in sorted(set(files) | set(before)):
            if files.get(rel) != before.get(rel):
                state = ("added" if rel not in before else "removed" if rel not in files
                         else "modified")
                out.append(f"{rel} ({state})")
    return out


def _changed_env(old: list[str], new: list[str]) -> str:
    o = dict(e.split("=", 1) for e in old if "=" in e)
    n = dict(e.split("=", 1) for e in new if "=" in e)
    diffs = [f"{k}: {o.get(k)!r} -> {n.get(k)!r}" for k in sorted(set(o) | set(n))
             if o.get(k) != n.get(k)]
    return "environment/build args changed: " + "; ".join(diffs[:5])


def _hash(value: Any) -> CacheKey:
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()

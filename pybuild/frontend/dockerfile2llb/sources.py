"""`ADD <url>` and `ADD <git ref>`: recognising them and their source ops.

Divergence from BuildKit, on purpose: these become `https://…` / `git://…` source ops that
pybuild fetches itself (`builder/sources.py`), with BuildKit's attrs (`http.filename`,
`http.perm`, `http.checksum`; `git.fullurl`, `git.ref`, `git.subdir`, `git.keepgitdir`,
`git.checksum`); the git ref and subdir are attrs, not one `ref:subdir` string.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pybuild.frontend.dockerfile2llb.state import DispatchContext, fail
from pybuild.frontend.instructions.loc import Loc
from pybuild.gocompat import clean_path
from pybuild.llb import Input, OpMetadata, SourceOp

_GIT_SCP = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:(?!//).+")


def is_http(src: str) -> bool:
    return src.startswith(("http://", "https://")) and not is_git(src)


def is_git(src: str) -> bool:
    return parse_git_ref(src) is not None


def parse_git_ref(src: str) -> dict[str, Any] | None:
    """dfgitutil.ParseGitRef, reduced to: is it a git source that is distinguishable from a
    local path, and its keep-git-dir / checksum query options. None: not a git ref."""
    remote = src
    if src.startswith(("git://", "ssh://", "git@")) or _GIT_SCP.match(src):
        pass
    elif src.startswith(("http://", "https://")):
        path = urlsplit(src).path
        if not path.endswith(".git") and ".git/" not in path:
            return None
    else:
        return None
    opts: dict[str, Any] = {}
    if "?" in remote:
        query = remote.split("?", 1)[1].split("#", 1)[0]
        values = parse_qs(query, keep_blank_values=True)
        for key in ("keep-git-dir", "submodules"):
            if key in values:
                v = values[key][-1].lower()
                opts[key] = v in ("", "1", "true", "t")
        for key in ("checksum", "ref", "subdir", "tag", "branch"):
            if key in values:
                opts[key] = values[key][-1]
    return opts


def split_git_ref(src: str) -> tuple[str, str, str]:
    """(remote, ref, subdir) of a git source: `remote[?query]#ref:subdir`."""
    remote, _, fragment = src.partition("#")
    remote = remote.split("?", 1)[0]
    ref, _, subdir = fragment.partition(":")
    return remote, ref, subdir


def url_filename(url: str) -> str:
    """The file name of an `ADD <url>`: the basename of the URL path, `__unnamed__` if
    there is none (dockerfile2llb)."""
    path = urlsplit(url).path
    base = posixpath.basename(path.rstrip("/")) if path not in ("", "/") else ""
    return base if base not in ("", ".", "..", "/") else "__unnamed__"


def redact(url: str) -> str:
    """A URL without its credentials (for descriptions)."""
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", url)


def http_source(ctx: DispatchContext, meta: OpMetadata, url: str, filename: str,
                checksum: str) -> Input:
    """llb.HTTP: the file lands as `/<filename>`, 0600 (a --chmod is applied by the
    copy), with the Last-Modified time."""
    attrs = [("http.filename", filename), ("http.perm", "0600")]
    if checksum:
        attrs.append(("http.checksum", checksum))
    return ctx.add(SourceOp(identifier=url, attrs=tuple(sorted(attrs))),
                   _source_meta(meta, f"[internal] load remote file {redact(url)}"))


def git_source(ctx: DispatchContext, meta: OpMetadata, loc: Loc, src: str,
               opts: dict[str, Any], keep_git_dir: bool, checksum: str) -> Input:
    """llb.Git: the checkout of `ref` (a commit, tag or branch), rooted at `subdir`."""
    remote, ref, subdir = split_git_ref(src)
    qref = opts.get("ref") or opts.get("tag") or opts.get("branch")
    if qref:
        if ref:
            raise fail(loc, "ref specified both in the URL fragment and the query")
        ref = qref
    if opts.get("subdir"):
        if subdir:
            raise fail(loc, "subdir specified both in the URL fragment and the query")
        subdir = opts["subdir"]
    if subdir:
        subdir = clean_path("/" + subdir).lstrip("/")
    attrs = [("git.fullurl", remote), ("git.ref", ref), ("git.subdir", subdir),
             ("git.keepgitdir", "true" if keep_git_dir else "false"),
             ("git.submodules", "false" if opts.get("submodules") is False else "true")]
    if checksum:
        attrs.append(("git.checksum", checksum))
    ident = "git://" + re.sub(r"^[a-z+]+://", "", remote)
    desc = f"[internal] load git source {redact(remote)}" + (f"#{ref}" if ref else "") + (
        f":{subdir}" if subdir else "")
    return ctx.add(SourceOp(identifier=ident, attrs=tuple(sorted(attrs))),
                   _source_meta(meta, desc))


def _source_meta(meta: OpMetadata, description: str) -> OpMetadata:
    """The metadata of a remote source: the step of the ADD that reads it, named as
    pybuild's own fetcher (BuildKit names the vertex like the ADD itself)."""
    return replace(meta, description=description, text=description)

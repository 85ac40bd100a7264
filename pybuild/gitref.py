"""Git references as buildx and BuildKit read them in build contexts and `--build-context`
(BuildKit's `frontend/dockerfile/dfgitutil.ParseGitRef` over `util/gitutil.ParseURL`).

    https://host/org/repo.git#ref:subdir     http(s) needs the `.git` suffix
    git@host:org/repo.git#ref                 scp-like, over ssh
    ssh://git@host/repo.git, git://host/repo  any URL of the git transports
    https://host/repo.git?ref=v1&subdir=dir   the query form (tag=, branch=, checksum=...)

Anything else (a local path, `file://`, an http URL without `.git`) is not a git ref.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pybuild.errors import UserError

_PROTO = re.compile(r"^[a-zA-Z0-9]+://")
_GIT_PROTOCOLS = frozenset({"http", "https", "ssh", "git"})
# sshutil.gitSSHRegex
_SCP = re.compile(r"^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
_FLAG_QUERIES = frozenset({"submodules", "keep-git-dir", "fetch-by-commit"})


@dataclass(frozen=True, slots=True, kw_only=True)
class GitRef:
    remote: str  # what git fetches from: the URL without fragment and query
    ref: str = ""  # a branch, a tag, refs/..., or a commit; "" = the remote's HEAD
    subdir: str = ""  # a directory inside the repository ("" = its root)
    checksum: str = ""  # the commit the ref must resolve to (a prefix of its sha)
    keep_git_dir: bool = False
    submodules: bool = True


def _bool(name: str, values: list[str], text: str) -> bool:
    if not values or values[0] == "":
        return True
    low = values[0].lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise UserError(f"git URL {text!r}: invalid {name} value {values[0]!r}",
                    code="bad-git-url")


def _subdir(text: str) -> str:
    return posixpath.join("/", text).lstrip("/").rstrip("/") if text else ""


def parse_git_ref(text: str) -> GitRef | None:
    """The git reference `text` names, or None when it is not one; a git URL with a bad
    query is an error."""
    if text.startswith(("./", "../")):
        return None
    github = text.startswith("github.com/")
    if github:  # BuildKit's deprecated form, still accepted for contexts
        text = "https://" + text
    proto = _PROTO.match(text)
    fragment = query = ""
    if proto:
        scheme = proto.group(0)[:-3].lower()
        if scheme not in _GIT_PROTOCOLS:
            return None
        parts = urlsplit(text)
        if scheme in ("http", "https") and not parts.path.endswith(".git") and not github:
            return None
        remote = urlunsplit(parts._replace(query="", fragment=""))
        fragment, query = parts.fragment, parts.query
    else:
        m = _SCP.match(text)
        if m is None:
            return None
        user, host, path, query, fragment = (g or "" for g in m.groups())
        remote = f"{user}@{host}:{path}"
    ref, _, subdir = fragment.partition(":")
    subdir = _subdir(subdir)
    keep_git_dir, submodules, checksum = False, True, ""
    tag = branch = ""
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if len(values) > 1:
            raise UserError(f"git URL {text!r}: query {key!r} has multiple values",
                            code="bad-git-url")
        if values == [""] and key not in _FLAG_QUERIES:
            raise UserError(f"git URL {text!r}: query {key!r} has no value",
                            code="bad-git-url")
        value = values[0] if values else ""
        match key:
            case "ref":
                if ref and ref != value:
                    raise UserError(f"git URL {text!r}: ref conflicts: {ref!r} vs {value!r}",
                                    code="bad-git-url")
                ref = value
            case "tag":
                tag = value
            case "branch":
                branch = value
            case "subdir":
                if subdir and subdir != _subdir(value):
                    raise UserError(f"git URL {text!r}: subdir conflicts: {subdir!r} vs "
                                    f"{value!r}", code="bad-git-url")
                subdir = _subdir(value)
            case "checksum" | "commit":
                checksum = value
            case "keep-git-dir":
                keep_git_dir = _bool(key, values, text)
            case "submodules":
                submodules = _bool(key, values, text)
            case "mtime" | "fetch-by-commit":
                raise UserError(f"git URL {text!r}: query {key!r} is not supported yet",
                                code="bad-git-url",
                                hint="pybuild checks out files with the checkout time and "
                                     "fetches by ref")
            case _:
                raise UserError(f"git URL {text!r}: unexpected query {key!r}",
                                code="bad-git-url",
                                hint="git URLs take ref, tag, branch, subdir, checksum, "
                                     "keep-git-dir and submodules")
    for value, prefix, what in ((tag, "refs/tags/", "tag"), (branch, "refs/heads/", "branch")):
        if not value:
            continue
        if tag and branch:
            raise UserError(f"git URL {text!r}: branch conflicts with tag", code="bad-git-url")
        full = value if value.startswith(prefix) else prefix + value
        if ref and ref != full:
            raise UserError(f"git URL {text!r}: ref conflicts: {ref!r} vs {full!r} ({what})",
                            code="bad-git-url")
        ref = full
    return GitRef(remote=remote, ref=ref, subdir=subdir, checksum=checksum,
                  keep_git_dir=keep_git_dir, submodules=submodules)


def is_http_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def is_remote_url(text: str) -> bool:
    """buildx's `urlutil.IsRemoteURL`: an http(s) URL or a git reference."""
    if is_http_url(text):
        return True
    try:
        return parse_git_ref(text) is not None
    except UserError:
        return True  # a git URL, if a malformed one: the build says why

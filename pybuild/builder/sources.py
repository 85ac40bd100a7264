"""Remote sources of `ADD`: HTTP(S) downloads and git checkouts, fetched by pybuild itself.

Both end up as a small directory that the solver treats like a local context (files are
tarred as 0:0 and copied by the sandbox), plus the identity that goes into the cache key.

HTTP (BuildKit's `source/http`): the file is named after the URL path (the frontend picks
the name), written 0600 unless a perm is given, with the `Last-Modified` time (else the
epoch). Downloads are kept under `$ROOT/cache/http/<sha256(url)>/` with the response's
ETag and Last-Modified; the next build sends `If-None-Match` / `If-Modified-Since` and
reuses the kept file on `304`. With a pinned `--checksum` whose file is already kept, no
request is made at all. The identity is (filename, perm, content digest, Last-Modified).

Git (BuildKit's `source/git`): a bare mirror per remote under `$ROOT/cache/git/<hash>/`,
fetched with the git CLI; the ref (commit sha, tag or branch; default HEAD) is resolved
with `git ls-remote`, so an unchanged commit needs no fetch; checkouts are kept per commit
(+ keep-git-dir) under `checkouts/`. `.git` is removed unless keep-git-dir. The identity is
the commit sha (+ subdir, keep-git-dir).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pybuild.errors import UserError

if TYPE_CHECKING:
    import ssl

HTTP_TIMEOUT = 60.0
_HEX_SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Fetched:
    root: str  # the directory the copy reads
    identity: str  # what the cache key of the source is made of
    fetched: bool  # bytes were transferred (a download or a git fetch happened)


def redact(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return parts._replace(netloc=host).geturl()
    return url


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.utime(fd)  # the lock file's mtime is this download's last use (prune until=)
        yield
    finally:
        os.close(fd)


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


# --- HTTP ------------------------------------------------------------------------------


def _checksum_of(path: str, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()}"


def _parse_http_time(value: str) -> float | None:
    import email.utils  # only downloads need it; the solver imports this module always

    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def fetch_http(cache_root: str, url: str, *, filename: str, perm: int = 0o600,
               checksum: str = "", refresh: bool = False, ca_cert: str = "") -> Fetched:
    """Download `url` (or reuse the kept download) and lay it out as `<dir>/<filename>`.
    `refresh` (--no-cache): download again, whatever is kept. `ca_cert` (--ca-cert): a PEM
    file trusted beside the system store (and $SSL_CERT_FILE)."""
    base = os.path.join(cache_root, "http", _url_hash(url))
    os.makedirs(base, exist_ok=True)
    with _locked(os.path.join(base, "lock")):
        meta_path = os.path.join(base, "meta.json")
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = {}
        kept = os.path.join(base, "data")
        have = bool(meta.get("digest")) and os.path.isfile(kept) and not refresh
        algo = checksum.partition(":")[0] if checksum else "sha256"
        fetched = False
        pinned_hit = have and checksum and meta.get("checksums", {}).get(algo) == checksum
        if not pinned_hit:
            meta, fetched = _download(url, base, meta if have else {}, algo, ca_cert)
        if checksum:
            got = meta.get("checksums", {}).get(algo) or _checksum_of(kept, algo)
            if got != checksum:
                raise UserError(f"digest mismatch for {redact(url)}: {got} (expected: "
                                f"{checksum})", code="checksum-mismatch")
        digest = meta["digest"]
        last_modified = meta.get("last_modified", "")
        identity = hashlib.sha256(json.dumps(
            [filename, perm, digest, last_modified]).encode()).hexdigest()
        out = os.path.join(base, f"src-{identity[:32]}")
        if not os.path.isdir(out):
            tmp = os.path.join(base, f"tmp-{uuid.uuid4().hex}")
            os.makedirs(tmp)
            target = os.path.join(tmp, filename)
            shutil.copyfile(kept, target)
            os.chmod(target, perm)
            mtime = _parse_http_time(last_modified) or 0.0
            os.utime(target, (mtime, mtime))
            os.rename(tmp, out)
        return Fetched(root=out, identity=f"http:{identity}", fetched=fetched)


def _tls(ca_cert: str) -> ssl.SSLContext | bool:
    """The system trust store (with $SSL_CERT_FILE), plus `ca_cert` when given."""
    import ssl  # (only downloads need it)

    if not ca_cert:
        return True
    ctx = ssl.create_default_context()
    try:
        ctx.load_verify_locations(cafile=ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"cannot load the CA file {ca_cert}: {exc}", code="bad-ca-file") from None
    return ctx


def _download(url: str, base: str, meta: dict[str, object], algo: str,
              ca_cert: str = "") -> tuple[dict[str, object], bool]:
    import httpx

    headers = {}
    if meta.get("etag"):
        headers["If-None-Match"] = str(meta["etag"])
    if meta.get("last_modified"):
        headers["If-Modified-Since"] = str(meta["last_modified"])
    tmp = os.path.join(base, f"download-{uuid.uuid4().hex}")
    try:
        with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT, trust_env=True,
                          verify=_tls(ca_cert)) as client, \
                client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 304 and meta:
                return meta, False
            if resp.status_code < 200 or resp.status_code >= 400:
                raise UserError(f"cannot download {redact(url)}: invalid response status "
                                f"{resp.status_code}", code="http-status")
            hashers = {name: hashlib.new(name) for name in {"sha256", algo}}
            with open(tmp, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
            etag = resp.headers.get("etag", "")
            last_modified = resp.headers.get("last-modified", "")
    except httpx.HTTPError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserError(f"cannot download {redact(url)}: {exc}", code="http-error") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, os.path.join(base, "data"))
    new = {"url": redact(url), "etag": etag, "last_modified": last_modified,
           "digest": "sha256:" + hashers["sha256"].hexdigest(),
           "checksums": {name: f"{name}:{h.hexdigest()}" for name, h in hashers.items()}}
    meta_tmp = os.path.join(base, "meta.json.tmp")
    with open(meta_tmp, "w", encoding="utf-8") as f:
        json.dump(new, f)
    os.replace(meta_tmp, os.path.join(base, "meta.json"))
    return new, True


# --- git -------------------------------------------------------------------------------


def _git(args: list[str], *, cwd: str | None = None, what: str, remote: str) -> str:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C",
               GIT_CONFIG_NOSYSTEM="1")
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    try:
        proc = subprocess.run(["git", "-c", "advice.detachedHead=false",
                               "-c", "init.defaultBranch=master", *args], cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", check=False, timeout=600)
    except FileNotFoundError:
        raise UserError("ADD of a git repository needs the git command, which is not "
                        "installed", code="git-missing") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"git {what} of {redact(remote)} timed out", code="git") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["exit code " + str(proc.returncode)])
        raise UserError(f"git {what} of {redact(remote)} failed: {detail[-1]}", code="git")
    return proc.stdout


def _resolve_ref(remote: str, ref: str) -> tuple[str, str]:
    """(commit sha, ref name to fetch) for a branch, tag, full ref name or HEAD."""
    out = _git(["ls-remote", "--", remote], what="ls-remote", remote=remote)
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name:
            refs[name] = sha
    want = ref or "HEAD"
    candidates = [want] if want.startswith("refs/") or want == "HEAD" else [
        f"refs/tags/{want}", f"refs/heads/{want}"]
    for name in candidates:
        if name in refs:
            # An annotated tag: the commit is the peeled value.
            return refs.get(name + "^{}", refs[name]), name
    raise UserError(f"repository {redact(remote)} does not contain ref {want}",
                    code="git-ref-missing")


def _has_commit(mirror: str, sha: str, remote: str) -> bool:
    try:
        _git(["--git-dir", mirror, "cat-file", "-e", f"{sha}^{{commit}}"], what="lookup",
             remote=remote)
    except UserError:
        return False
    return True


def fetch_git(cache_root: str, remote: str, *, ref: str = "", subdir: str = "",
              keep_git_dir: bool = False, checksum: str = "",
              submodules: bool = True) -> Fetched:
    base = os.path.join(cache_root, "git", _url_hash(remote))
    mirror = os.path.join(base, "mirror.git")
    os.makedirs(base, exist_ok=True)
    fetched = False
    with _locked(os.path.join(base, "lock")):
        if not os.path.isdir(mirror):
            tmp = os.path.join(base, f"tmp-{uuid.uuid4().hex}")
            _git(["init", "--bare", "-q", tmp], what="init", remote=remote)
            os.rename(tmp, mirror)
        if _HEX_SHA.match(ref):
            sha, refname = ref, ""
        else:
            sha, refname = _resolve_ref(remote, ref)
        if not _has_commit(mirror, sha, remote):
            specs = ([f"+{refname}:refs/pybuild/fetched"] if refname else
                     ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
            _git(["--git-dir", mirror, "fetch", "-q", "--no-tags", "--", remote, *specs],
                 what="fetch", remote=remote)
            fetched = True
            if not _has_commit(mirror, sha, remote):
                raise UserError(f"repository {redact(remote)} does not contain commit {sha}",
                                code="git-ref-missing")
        if checksum and not sha.startswith(checksum):
            raise UserError(f"expected checksum to match {checksum}, got {sha}",
                            code="checksum-mismatch")
        # A ref the cache can fetch from, whatever way the commit arrived.
        _git(["--git-dir", mirror, "update-ref", f"refs/pybuild/commits/{sha}", sha],
             what="update-ref", remote=remote)
        checkout = os.path.join(base, "checkouts", f"{sha}{'-git' if keep_git_dir else ''}")
        if not os.path.isdir(checkout):
            _checkout(mirror, remote, sha, refname, checkout, keep_git_dir, submodules)
            fetched = True
    root = checkout
    if subdir:
        parts = [p for p in subdir.split("/") if p and p != "."]
        if ".." in parts:
            raise UserError(f"git subdir {subdir!r} escapes the repository")
        root = os.path.join(checkout, *parts)
        if not os.path.isdir(root) or os.path.islink(root):
            raise UserError(f"subdir {subdir!r} not found in {redact(remote)} at {sha}",
                            code="git-subdir-missing")
    identity = hashlib.sha256(json.dumps(
        [sha, "/".join(p for p in subdir.split("/") if p and p != "."), keep_git_dir]
    ).encode()).hexdigest()
    return Fetched(root=root, identity=f"git:{sha}:{identity}", fetched=fetched)


def _checkout(mirror: str, remote: str, sha: str, refname: str, dest: str,
              keep_git_dir: bool, submodules: bool) -> None:
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tmp-", dir=parent)
    try:
        _git(["init", "-q", tmp], what="init", remote=remote)
        _git(["fetch", "-q", "--no-tags", mirror, f"refs/pybuild/commits/{sha}"], cwd=tmp,
             what="checkout", remote=remote)
        _git(["checkout", "-q", sha], cwd=tmp, what="checkout", remote=remote)
        if refname.startswith("refs/heads/"):
            branch = refname.removeprefix("refs/heads/")
            _git(["checkout", "-q", "-B", branch], cwd=tmp, what="checkout", remote=remote)
        if submodules and os.path.exists(os.path.join(tmp, ".gitmodules")):
            _git(["submodule", "update", "--init", "--recursive", "--depth=1"], cwd=tmp,
                 what="submodule update", remote=remote)
        if keep_git_dir:
            _git(["remote", "add", "origin", remote], cwd=tmp, what="checkout", remote=remote)
        else:
            shutil.rmtree(os.path.join(tmp, ".git"))
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

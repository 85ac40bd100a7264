"""ADD as BuildKit does it (BEHAVIOURS.md §7): local archives, HTTP(S) URLs, git sources.

Asserted on the exported tree (`-o type=local`; the tests run as root so owners survive)
and on cache behaviour (`--progress rawjson`: a rebuild with nothing changed starts no
vertex). The remote sources are served by a real HTTP server on 127.0.0.1 started here
(git over the "dumb" HTTP protocol: the bare repository served statically after
`git update-server-info`).
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from tests.integration.conftest import PybuildRunner, Run

NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


# --- helpers ---------------------------------------------------------------------------


def _tar(members: list[tuple[str, bytes | None, dict[str, object]]]) -> bytes:
    """A tar with (name, data or None for a dir, header overrides)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, over in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000_000
            info.mode = 0o644
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            else:
                info.size = len(data)
            for k, v in over.items():
                setattr(info, k, v)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _meta(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _started(out: str) -> list[str]:
    return [json.loads(line)["name"] for line in out.splitlines()
            if line.startswith("{") and json.loads(line)["type"] == "VertexStarted"]


def _build(pybuild: PybuildRunner, ctx: Path, out: Path | None = None) -> Run:
    args = ["build", "--progress", "rawjson"]
    if out is not None:
        args += ["-o", f"type=local,dest={out}"]
    return pybuild(*args, str(ctx), env=NO_PROXY)


def _ok(r: Run) -> Run:
    assert r.code == 0, r.err
    return r


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, int]] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/etag/"):
                    data = Path(self.translate_path(self.path)).read_bytes()
                    etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.end_headers()
                        server.requests.append(("GET", self.path, 304))
                        return
                    self.send_response(200)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    server.requests.append(("GET", self.path, 200))
                    return
                super().do_GET()

            def send_response(self, code: int, message: str | None = None) -> None:
                if not self.path.startswith("/etag/"):
                    server.requests.append((self.command, self.path, code))
                super().send_response(code, message)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                         functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "srv"
    root.mkdir()
    srv = _Server(root)
    yield srv
    srv.close()


# --- local archives --------------------------------------------------------------------


ARCHIVE_DF = """\
FROM busybox
RUN ln -s /tmp /install
ADD plain.tar /plain/
ADD gz.tar.gz /gz
ADD bz.tar.bz2 xz.tar.xz zst.tar.zst /many/
ADD arch-*.tar /wild/
ADD --chown=1000:1000 owned.tar /owned/
ADD implied.tar /implied/
ADD plain.tar /install/
ADD --unpack=false plain.tar /nounpack/
COPY plain.tar /copied/
ADD notatar.tar notatar.gz empty.tar /files/
ADD whiteout.tar /wh/
RUN ls -a /wh > /wh-listing
"""


def _archive_ctx(ctx: Path) -> None:
    ctx.mkdir()
    plain = _tar([("d", None, {"mode": 0o751, "uid": 7, "gid": 8}),
                  ("d/f.txt", b"F", {"mode": 0o640, "uid": 7, "gid": 8}),
                  ("d/link", b"", {"type": tarfile.SYMTYPE, "linkname": "f.txt"}),
                  ("d/hard", b"", {"type": tarfile.LNKTYPE, "linkname": "d/f.txt"})])
    (ctx / "plain.tar").write_bytes(plain)
    one = _tar([("one.txt", b"1", {})])
    (ctx / "gz.tar.gz").write_bytes(gzip.compress(one))
    (ctx / "bz.tar.bz2").write_bytes(bz2.compress(_tar([("bz.txt", b"bz", {})])))
    (ctx / "xz.tar.xz").write_bytes(lzma.compress(_tar([("xz.txt", b"xz", {})])))
    (ctx / "zst.tar.zst").write_bytes(
        zstandard.ZstdCompressor().compress(_tar([("zst.txt", b"zst", {})])))
    (ctx / "arch-a.tar").write_bytes(_tar([("a.txt", b"a", {})]))
    (ctx / "arch-b.tar").write_bytes(_tar([("b.txt", b"b", {})]))
    (ctx / "owned.tar").write_bytes(_tar([("o", None, {"uid": 5, "gid": 5}),
                                          ("o/x.txt", b"x", {"uid": 5, "gid": 5})]))
    (ctx / "implied.tar").write_bytes(_tar([("p/q/r.txt", b"r", {})]))
    (ctx / "notatar.tar").write_bytes(b"just text, named like a tar\n")
    (ctx / "notatar.gz").write_bytes(gzip.compress(b"compressed text, not a tar\n" * 40))
    (ctx / "empty.tar").write_bytes(b"\0" * 1024)
    (ctx / "whiteout.tar").write_bytes(_tar([("keep.txt", b"k", {}),
                                             (".wh.keep.txt", b"", {})]))
    (ctx / "Dockerfile").write_text(ARCHIVE_DF)


def test_add_local_archives(pybuild: PybuildRunner, tmp_path: Path) -> None:
    """testDockerfileAddArchive, ...WithImpliedParentDir, ...ThroughAbsoluteSymlink,
    ...Wildcard, testDockerfileAddChownArchive."""
    ctx = tmp_path / "ctx"
    _archive_ctx(ctx)
    out = tmp_path / "out"
    _ok(_build(pybuild, ctx, out))
    # extracted with the archive's modes, owners, mtimes, links
    assert (out / "plain/d/f.txt").read_text() == "F"
    assert _meta(out / "plain/d/f.txt") == (0o640, 7, 8)
    assert _meta(out / "plain/d") == (0o751, 7, 8)
    assert (out / "plain/d/f.txt").stat().st_mtime == 1_000_000_000
    assert os.readlink(out / "plain/d/link") == "f.txt"
    assert (out / "plain/d/hard").stat().st_ino == (out / "plain/d/f.txt").stat().st_ino
    # compression by content; several sources; no trailing slash still a dir
    assert (out / "gz/one.txt").read_text() == "1"
    for name in ("bz", "xz", "zst"):
        assert (out / "many" / f"{name}.txt").read_text() == name
    assert sorted(os.listdir(out / "wild")) == ["a.txt", "b.txt"]
    assert _meta(out / "owned/o/x.txt")[1:] == (1000, 1000)
    assert _meta(out / "owned/o")[1:] == (1000, 1000)
    assert (out / "implied/p/q/r.txt").read_text() == "r"
    assert _meta(out / "implied/p")[0] == 0o755
    # through the absolute symlink /install -> /tmp
    assert (out / "tmp/d/f.txt").read_text() == "F"
    # not extracted
    assert (out / "nounpack/plain.tar").read_bytes() == (ctx / "plain.tar").read_bytes()
    assert (out / "copied/plain.tar").is_file()
    for name in ("notatar.tar", "notatar.gz", "empty.tar"):
        assert (out / "files" / name).read_bytes() == (ctx / name).read_bytes()
    # `.wh.` names in a user's archive are files, not whiteouts (moby's Untar)
    assert ".wh.keep.txt" in (out / "wh-listing").read_text().split()
    assert "keep.txt" in (out / "wh-listing").read_text().split()


def test_add_archive_escape_is_refused(pybuild: PybuildRunner, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(_tar([("../../evil.txt", b"e", {})]))
    (ctx / "Dockerfile").write_text("FROM busybox\nADD evil.tar /x/\n")
    r = _build(pybuild, ctx)
    assert r.code == 1
    assert "escapes the destination" in r.err
    assert "Dockerfile:2" in r.err and "ADD" in r.err
    assert "Traceback" not in r.err


# --- HTTP ------------------------------------------------------------------------------


def test_add_url(pybuild: PybuildRunner, server: _Server, tmp_path: Path) -> None:
    """testDockerfileADDFromURL, testAddURLChmod, testAddChecksum."""
    srv = server.root
    (srv / "files").mkdir()
    (srv / "etag").mkdir()
    (srv / "files/hello.txt").write_text("hello\n")
    os.utime(srv / "files/hello.txt", (1_500_000_000, 1_500_000_000))
    (srv / "files/arch.tar.gz").write_bytes(gzip.compress(_tar([("in.txt", b"in", {})])))
    (srv / "etag/e.txt").write_text("etag v1\n")
    digest = "sha256:" + hashlib.sha256(b"hello\n").hexdigest()
    d512 = "sha512:" + hashlib.sha512(b"hello\n").hexdigest()
    u = server.url
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"""\
FROM busybox
ADD {u}/files/hello.txt /dl/
ADD --chmod=755 {u}/files/hello.txt /dl/exec
ADD --chown=1000:1000 {u}/files/hello.txt /owned
ADD --checksum={digest} {u}/files/hello.txt /sum/
ADD --checksum={d512} {u}/files/hello.txt /sum512
ADD {u}/files/arch.tar.gz /raw/
ADD --unpack=true {u}/files/arch.tar.gz /unpacked/
ADD {u}/etag/e.txt /etag/
ADD {u}/ /unnamed/
""")
    out = tmp_path / "out"
    _ok(_build(pybuild, ctx, out))
    f = out / "dl/hello.txt"
    assert f.read_text() == "hello\n"
    assert _meta(f) == (0o600, 0, 0)
    assert f.stat().st_mtime == 1_500_000_000  # Last-Modified
    assert _meta(out / "dl/exec") == (0o755, 0, 0)
    assert _meta(out / "owned") == (0o600, 1000, 1000)
    assert (out / "sum/hello.txt").read_text() == "hello\n"
    assert (out / "sum512").read_text() == "hello\n"
    assert (out / "raw/arch.tar.gz").read_bytes() == (srv / "files/arch.tar.gz").read_bytes()
    assert (out / "unpacked/in.txt").read_text() == "in"
    assert (out / "etag/e.txt").read_text() == "etag v1\n"
    assert (out / "etag/e.txt").stat().st_mtime == 0  # no Last-Modified: the epoch
    assert (out / "unnamed/__unnamed__").is_file()

    # Unchanged: revalidated (304), nothing runs. (The directory listing has neither an
    # ETag nor a Last-Modified: it is downloaded again, but its content is unchanged, so
    # the step that copies it is still cached.)
    server.requests.clear()
    r = _ok(_build(pybuild, ctx))
    assert _started(r.out) == [f"[internal] load remote file {u}/"]
    assert ("GET", "/etag/e.txt", 304) in server.requests
    assert ("GET", "/files/hello.txt", 304) in server.requests

    # Changed on the server: downloaded again, the steps that copy it run again.
    (srv / "etag/e.txt").write_text("etag v2\n")
    r = _ok(_build(pybuild, ctx, out))
    started = _started(r.out)
    assert any("etag/e.txt /etag/" in s for s in started), started
    assert not any("hello.txt /dl/" in s for s in started), started
    assert (out / "etag/e.txt").read_text() == "etag v2\n"
    # The miss names the download that changed.
    misses = {e["name"]: e["reason"] for e in map(json.loads, r.out.splitlines())
              if e.get("type") == "VertexMiss"}
    reason = next(v for k, v in misses.items() if "etag/e.txt /etag/" in k)
    assert reason == f"changed input: the download {u}/etag/e.txt", reason


def test_add_url_errors(pybuild: PybuildRunner, server: _Server, tmp_path: Path) -> None:
    (server.root / "f.txt").write_text("x")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    bad = "sha256:" + "0" * 64
    (ctx / "Dockerfile").write_text(
        f"FROM busybox\nRUN true\nADD --checksum={bad} {server.url}/f.txt /f\n")
    r = _build(pybuild, ctx)
    assert r.code == 1
    assert "digest mismatch" in r.err and bad in r.err
    assert "Dockerfile:3" in r.err and "ADD" in r.err
    assert "Traceback" not in r.err
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {server.url}/missing.txt /f\n")
    r = _build(pybuild, ctx)
    assert r.code == 1
    assert "invalid response status 404" in r.err and "Dockerfile:2" in r.err
    assert "Traceback" not in r.err


# --- git -------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "GIT_AUTHOR_DATE": formatdate(1_600_000_000),
           "GIT_COMMITTER_DATE": formatdate(1_600_000_000), "GIT_CONFIG_NOSYSTEM": "1",
           "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(server: _Server, tmp_path: Path) -> Iterator[tuple[_Server, Path, Path]]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / "sub").mkdir()
    (work / "sub/s.txt").write_text("sub v1\n")
    (work / "top.txt").write_text("top v1\n")
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    os.symlink("top.txt", work / "link")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "one")
    _git(work, "tag", "-a", "v1", "-m", "v1")
    bare = server.root / "repo.git"
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    _git(bare, "update-server-info")
    yield server, work, bare


def _push(work: Path, bare: Path) -> None:
    _git(work, "push", "-q", str(bare), "main")
    _git(bare, "update-server-info")


def test_add_git(pybuild: PybuildRunner, repo: tuple[_Server, Path, Path],
                 tmp_path: Path) -> None:
    """testAddGit, testGitQueryString, testAddGitChecksumCache."""
    server, work, bare = repo
    sha1 = _git(work, "rev-parse", "HEAD")
    u = f"{server.url}/repo.git"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"""\
FROM busybox
ADD {u}#v1:sub /tagsub
ADD {u} /head/
ADD --keep-git-dir=true {u}#main /kept/
ADD {u}?ref={sha1}&subdir=sub /query/
ADD --checksum={sha1} {u}#v1 /pinned/
ADD --chown=1000:1000 {u}#main:sub /owned/
""")
    out = tmp_path / "out"
    _ok(_build(pybuild, ctx, out))
    assert (out / "tagsub/s.txt").read_text() == "sub v1\n"
    assert not (out / "tagsub/top.txt").exists()
    assert (out / "head/top.txt").read_text() == "top v1\n"
    assert not (out / "head/.git").exists()
    assert _meta(out / "head/run.sh") == (0o755, 0, 0)
    assert _meta(out / "head/top.txt") == (0o644, 0, 0)
    assert os.readlink(out / "head/link") == "top.txt"
    assert (out / "kept/.git").is_dir()
    assert (out / "query/s.txt").read_text() == "sub v1\n"
    assert (out / "pinned/top.txt").is_file()
    assert _meta(out / "owned/s.txt")[1:] == (1000, 1000)

    # Unchanged commits: nothing runs (and nothing is fetched).
    r = _ok(_build(pybuild, ctx))
    assert _started(r.out) == []

    # A new commit on main: the steps reading main run again, the pinned ones do not.
    (work / "sub/s.txt").write_text("sub v2\n")
    _git(work, "commit", "-q", "-am", "two")
    _push(work, bare)
    time.sleep(0.1)
    r = _ok(_build(pybuild, ctx, out))
    started = _started(r.out)
    assert any("/owned/" in s for s in started), started
    assert not any("/tagsub" in s for s in started), started
    assert (out / "owned/s.txt").read_text() == "sub v2\n"
    assert (out / "tagsub/s.txt").read_text() == "sub v1\n"


def test_add_git_errors(pybuild: PybuildRunner, repo: tuple[_Server, Path, Path],
                        tmp_path: Path) -> None:
    server, _work, _ = repo
    u = f"{server.url}/repo.git"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD --checksum={'a' * 40} {u}#v1 /x\n")
    r = _build(pybuild, ctx)
    assert r.code == 1
    assert "expected checksum to match" in r.err and "Dockerfile:2" in r.err
    assert "Traceback" not in r.err
    (ctx / "Dockerfile").write_text(f"FROM busybox\n\nADD {u}#nosuchref /x\n")
    r = _build(pybuild, ctx)
    assert r.code == 1
    assert "does not contain ref nosuchref" in r.err and "Dockerfile:3" in r.err
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {u}#main:nosuchdir /x\n")
    r = _build(pybuild, ctx)
    assert r.code == 1
    assert "subdir" in r.err and "nosuchdir" in r.err and "Dockerfile:2" in r.err


def test_add_hostile_archive_stays_in_the_image(pybuild: PybuildRunner, tmp_path: Path) -> None:
    """An ADDed archive that replaces a parent by a symlink to a host path after its
    children, names with `..` and absolute names, and device nodes: everything lands
    inside the image (the symlink resolved as if the dest were /), the host path is
    untouched, and the devices the build's user namespace cannot make are counted in
    one warning."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    before = [(p.stat().st_mode, p.stat().st_mtime_ns) for p in (victim, victim / "sub")]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hostile.tar").write_bytes(_tar([
        ("d", None, {"mode": 0o777, "mtime": 0}),
        ("d/sub", None, {"mode": 0o777, "mtime": 0}),
        ("d", b"", {"type": tarfile.SYMTYPE, "linkname": str(victim)}),
        ("d/sub/after.txt", b"after", {}),
        ("/abs.txt", b"abs", {}),
        ("x/../dotdot.txt", b"dd", {}),
        ("null", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    ]))
    (ctx / "Dockerfile").write_text("FROM busybox\nADD hostile.tar /h/\n")
    out = tmp_path / "out"
    r = _build(pybuild, ctx, out)
    _ok(r)
    assert [(p.stat().st_mode, p.stat().st_mtime_ns) for p in (victim, victim / "sub")] \
        == before
    assert os.listdir(victim / "sub") == []
    assert os.readlink(out / "h/d") == str(victim)
    # chrootarchive: resolved as if the ADD's dest were /
    assert (out / "h" / str(victim).lstrip("/") / "sub/after.txt").read_text() == "after"
    assert (out / "h/abs.txt").read_text() == "abs"
    assert (out / "h/dotdot.txt").read_text() == "dd"
    if not (out / "h/null").exists():  # root's builds run in a user namespace too
        assert "hostile.tar: 1 device node left out" in r.out + r.err

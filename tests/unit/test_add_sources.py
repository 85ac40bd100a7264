"""HTTP and git fetching for ADD (builder/sources.py), against a server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pybuild.builder import sources
from pybuild.errors import UserError


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path,
                                                                               list[str]]]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "srv"
    root.mkdir()
    log: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def send_response(self, code: int, message: str | None = None) -> None:
            log.append(f"{self.command} {self.path} {code}")
            super().send_response(code, message)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler,
                                                                     directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, log
    httpd.shutdown()
    httpd.server_close()


def test_http_download_revalidate_and_pin(served, tmp_path: Path) -> None:
    url, root, log = served
    (root / "f.bin").write_bytes(b"data")
    os.utime(root / "f.bin", (1_400_000_000, 1_400_000_000))
    cache = str(tmp_path / "cache")
    a = sources.fetch_http(cache, f"{url}/f.bin", filename="f.bin")
    assert a.fetched
    f = Path(a.root) / "f.bin"
    assert f.read_bytes() == b"data"
    assert (f.stat().st_mode & 0o7777, f.stat().st_mtime) == (0o600, 1_400_000_000)
    b = sources.fetch_http(cache, f"{url}/f.bin", filename="f.bin")
    assert (b.fetched, b.identity, log[-1]) == (False, a.identity, "GET /f.bin 304")
    # a pinned checksum that the kept file has: no request at all
    n = len(log)
    for algo in ("sha256", "sha384", "sha512"):
        pinned = f"{algo}:" + hashlib.new(algo, b"data").hexdigest()
        c = sources.fetch_http(cache, f"{url}/f.bin", filename="f.bin", checksum=pinned)
        assert c.identity == a.identity
    assert len(log) == n + 2  # sha384 and sha512 were not kept yet: revalidated once each
    with pytest.raises(UserError, match=r"digest mismatch for .*expected: sha256:0+"):
        sources.fetch_http(cache, f"{url}/f.bin", filename="f.bin",
                           checksum="sha256:" + "0" * 64)
    # another name or mode is another identity; a change on the server, too
    assert sources.fetch_http(cache, f"{url}/f.bin", filename="g",
                              perm=0o755).identity != a.identity
    (root / "f.bin").write_bytes(b"new data")
    d = sources.fetch_http(cache, f"{url}/f.bin", filename="f.bin")
    assert d.fetched and d.identity != a.identity
    assert (Path(d.root) / "f.bin").read_bytes() == b"new data"


def test_http_errors(served, tmp_path: Path) -> None:
    url, _, _ = served
    with pytest.raises(UserError, match="invalid response status 404"):
        sources.fetch_http(str(tmp_path), f"{url}/nope", filename="nope")
    with pytest.raises(UserError, match=r"cannot download http://127\.0\.0\.1:1/x"):
        sources.fetch_http(str(tmp_path), "http://user:pw@127.0.0.1:1/x", filename="x")


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e", "HOME": str(cwd),
           "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_refs(served, tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    url, root, _ = served
    work = tmp_path / "w"
    work.mkdir()
    _git(work, "init", "-q", "-b", "dev")
    (work / "d").mkdir()
    (work / "d/f").write_text("1")
    _git(work, "add", ".")
    _git(work, "commit", "-qm", "1")
    one = _git(work, "rev-parse", "HEAD")
    _git(work, "tag", "-a", "t1", "-m", "t1")
    (work / "d/f").write_text("2")
    _git(work, "commit", "-qam", "2")
    two = _git(work, "rev-parse", "HEAD")
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(root / "r.git"))
    _git(root / "r.git", "update-server-info")
    remote = f"{url}/r.git"
    cache = str(tmp_path / "cache")

    head = sources.fetch_git(cache, remote)
    assert head.fetched and (Path(head.root) / "d/f").read_text() == "2"
    assert not (Path(head.root) / ".git").exists()
    assert head.identity.startswith(f"git:{two}:")
    again = sources.fetch_git(cache, remote, ref="dev")
    assert not again.fetched and again.identity == head.identity
    tag = sources.fetch_git(cache, remote, ref="t1", subdir="d", checksum=one[:12])
    assert Path(tag.root).name == "d" and (Path(tag.root) / "f").read_text() == "1"
    by_sha = sources.fetch_git(cache, remote, ref=one, keep_git_dir=True)
    assert (Path(by_sha.root) / ".git").is_dir()
    assert _git(Path(by_sha.root), "rev-parse", "HEAD") == one
    with pytest.raises(UserError, match="expected checksum to match"):
        sources.fetch_git(cache, remote, ref="t1", checksum=two)
    with pytest.raises(UserError, match="does not contain ref nope"):
        sources.fetch_git(cache, remote, ref="nope")
    with pytest.raises(UserError, match="subdir 'x' not found"):
        sources.fetch_git(cache, remote, subdir="x")
    with pytest.raises(UserError, match="escapes"):
        sources.fetch_git(cache, remote, subdir="../..")

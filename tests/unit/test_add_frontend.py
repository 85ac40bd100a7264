"""ADD of URLs and git repositories in the frontend (BEHAVIOURS.md §7): the source ops
and copies dockerfile2llb makes."""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.llb import CopyAction, FileOp, SourceOp


def _compile(fe, df: str) -> tuple[list[CopyAction], dict[str, SourceOp]]:
    d = fe.compile(df).definition
    copies: list[CopyAction] = []
    sources: dict[str, SourceOp] = {}
    for x in d.topological():
        op = d.ops[x]
        if isinstance(op, FileOp):
            copies.extend(a for a in op.actions if isinstance(a, CopyAction))
        elif isinstance(op, SourceOp):
            sources[str(x)] = op
    return copies, sources


def _source(sources: dict[str, SourceOp], a: CopyAction) -> SourceOp:
    return sources[str(a.source.op)]


@pytest.mark.parametrize(("url", "name"), [
    ("https://example.com/path/file.tgz", "file.tgz"),
    ("https://example.com/path/file.tgz?x=1#frag", "file.tgz"),
    ("https://example.com/", "__unnamed__"),
    ("https://example.com", "__unnamed__"),
    ("http://example.com/dir/", "dir"),
])
def test_url_filename(fe, url, name):
    (a,), sources = _compile(fe, f"FROM busybox\nADD {url} /d/\n")
    src = _source(sources, a)
    assert src.identifier == url
    assert dict(src.attrs) == {"http.filename": name, "http.perm": "0600"}
    assert a.sources == ("/" + name,)
    assert (a.dest, a.dest_is_dir, a.unpack) == ("/d", True, False)


def test_url_flags(fe):
    digest = "sha256:" + "a" * 64
    (a, b), sources = _compile(fe, f"FROM busybox\nADD --checksum={digest} --chmod=755 "
                               "--chown=1:2 https://h/f.tar.gz /x\n"
                               "ADD --unpack=true https://h/f.tar.gz /y/\n")
    assert dict(_source(sources, a).attrs)["http.checksum"] == digest
    assert (a.chmod, a.chown.user, a.chown.group, a.unpack) == ("755", "1", "2", False)
    assert b.unpack  # only an explicit --unpack=true extracts a download


@pytest.mark.parametrize(("src", "remote", "ref", "subdir"), [
    ("https://github.com/moby/buildkit.git#v0.10.1:docs", "https://github.com/moby/buildkit.git",
     "v0.10.1", "docs"),
    ("https://h/r.git", "https://h/r.git", "", ""),
    ("https://h/r.git#main", "https://h/r.git", "main", ""),
    ("https://h/r.git?ref=main&subdir=a/b/", "https://h/r.git", "main", "a/b"),
    ("https://h/r.git?tag=v1", "https://h/r.git", "v1", ""),
    ("git@github.com:moby/buildkit.git#main:x", "git@github.com:moby/buildkit.git", "main", "x"),
])
def test_git_source(fe, src, remote, ref, subdir):
    (a,), sources = _compile(fe, f"FROM busybox\nADD {src} /x\n")
    attrs = dict(_source(sources, a).attrs)
    assert (attrs["git.fullurl"], attrs["git.ref"], attrs["git.subdir"]) == (remote, ref, subdir)
    assert attrs["git.keepgitdir"] == "false"
    # the checkout's contents go into dest, whatever the trailing slash
    assert (a.sources, a.dest, a.dest_is_dir, a.unpack) == (("/",), "/x", True, False)


def test_git_keep_and_checksum(fe):
    sha = "a" * 40
    (a, b), sources = _compile(
        fe, f"FROM busybox\nADD --keep-git-dir --checksum={sha} https://h/r.git /x\n"
        "ADD https://h/r.git?keep-git-dir=true&submodules=false /y\n")
    attrs = dict(_source(sources, a).attrs)
    assert (attrs["git.keepgitdir"], attrs["git.checksum"]) == ("true", sha)
    attrs = dict(_source(sources, b).attrs)
    assert (attrs["git.keepgitdir"], attrs["git.submodules"]) == ("true", "false")


def test_remote_source_metadata_is_not_identity(fe):
    """The same URL in two stages is one source op."""
    _, sources = _compile(fe, "FROM busybox AS a\nADD https://h/f /a\n"
                          "FROM busybox\nCOPY --from=a /a /a\nADD https://h/f /b\n")
    assert [s.identifier for s in sources.values()].count("https://h/f") == 1


def test_copy_still_rejects_remote_sources(fe):
    with pytest.raises(UserError, match="source can't be a URL for COPY"):
        fe.compile("FROM busybox\nCOPY https://h/f /x\n")
    with pytest.raises(UserError, match="source can't be a git ref for COPY"):
        fe.compile("FROM busybox\nCOPY https://h/r.git /x\n")

"""COPY as BuildKit does it (BEHAVIOURS.md §6), asserted on the exported tree.

Each test builds with the CLI and exports `type=local` (the tests run as root, so owners
survive the export), then checks contents, modes and owners of the real files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import PybuildRunner

MATRIX = """\
FROM busybox AS main
RUN mkdir -p /existing/sub && chown 500:600 /existing /existing/sub && chmod 0750 /existing \\
 && echo old > /over.txt && mkdir -p /overdir/x && echo old > /overdir/x/f \\
 && echo app:x:1234:1234::/home/app:/bin/sh >> /etc/passwd && echo app:x:1234: >> /etc/group
COPY dir /contents
COPY dir/ /trail/
COPY file.txt /asfile
COPY file.txt /intodir/
COPY dir/. /existing/
COPY f*.txt nomatch* /wild/
COPY top-link /followed
COPY --chown=daemon file.txt /chown-user
COPY --chown=1000:nogroup file.txt /chown-mixed
COPY --chown=app dir /chown-dir/
COPY --chmod=640 file.txt /chmod-octal/parent/f
COPY --chmod=u+x,go=rX file.txt /chmod-sym
COPY --exclude=*.log --exclude=sub/keep.txt ex /excl/
COPY ["ünïcode-файл.txt", "/unicode/"]
COPY file.txt /over.txt
COPY dir /overdir

FROM busybox AS src
RUN mkdir -p /s/d && echo x > /s/d/f && chown -R 7:8 /s && chmod 0701 /s/d && ln -s d/f /s/lnk

FROM main
COPY --from=src /s /fromstage
COPY --from=src /s/lnk /fromlink
"""


def _ctx(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "ex" / "sub").mkdir(parents=True)
    (ctx / "dir" / "a.txt").write_text("A")
    (ctx / "dir" / "a.txt").chmod(0o640)
    (ctx / "dir" / "sub" / "b.txt").write_text("B")
    os.symlink("a.txt", ctx / "dir" / "link")
    os.symlink("dir/a.txt", ctx / "top-link")
    (ctx / "file.txt").write_text("F")
    (ctx / "ünïcode-файл.txt").write_text("U")
    (ctx / "ex" / "keep.txt").write_text("K")
    (ctx / "ex" / "skip.log").write_text("S")
    (ctx / "ex" / "sub" / "deep.log").write_text("D")
    (ctx / "ex" / "sub" / "keep.txt").write_text("K2")
    # the owner of context files never reaches the image
    os.chown(ctx / "file.txt", 4321, 4321)
    return ctx


def _meta(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _build(pybuild: PybuildRunner, ctx: Path, out: Path, *extra: str) -> None:
    r = pybuild("build", "--progress", "plain", *extra, "-o", f"type=local,dest={out}", str(ctx))
    assert r.code == 0, r.err


def test_copy_matrix(pybuild: PybuildRunner, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (ctx / "Dockerfile").write_text(MATRIX)
    out = tmp_path / "out"
    _build(pybuild, ctx, out)

    # a directory source copies its contents; with or without a trailing slash
    for d in ("contents", "trail", "overdir"):
        assert (out / d / "a.txt").read_text() == "A"
        assert _meta(out / d / "a.txt") == (0o640, 0, 0)  # mode kept, context files 0:0
        assert (out / d / "sub" / "b.txt").read_text() == "B"
        assert os.readlink(out / d / "link") == "a.txt"  # symlinks inside dirs stay links
        assert not (out / d / "dir").exists()
        assert _meta(out / d) == (0o755, 0, 0)
    # dest without slash is a file; with slash (or an existing dir) a directory
    assert (out / "asfile").read_text() == "F"
    assert _meta(out / "asfile") == (0o644, 0, 0)
    assert (out / "intodir" / "file.txt").read_text() == "F"
    # existing directories keep owner and mode, new entries are 0:0
    assert _meta(out / "existing") == (0o750, 500, 600)
    assert _meta(out / "existing" / "sub") == (0o755, 500, 600)
    assert _meta(out / "existing" / "sub" / "b.txt") == (0o644, 0, 0)
    assert (out / "existing" / "a.txt").read_text() == "A"
    # wildcards; one that matches nothing is fine
    assert sorted(os.listdir(out / "wild")) == ["file.txt"]
    # a top-level symlink source is followed
    assert (out / "followed").read_text() == "A" and not (out / "followed").is_symlink()
    # --chown: names from the destination's passwd/group; a user alone gives gid = uid
    assert _meta(out / "chown-user")[1:] == (1, 1)
    assert _meta(out / "chown-mixed")[1:] == (1000, 65534)
    for p in ("chown-dir", "chown-dir/a.txt", "chown-dir/sub", "chown-dir/sub/b.txt",
              "chown-dir/link"):
        assert _meta(out / p)[1:] == (1234, 1234), p
    # --chmod, octal (also on created parents) and symbolic
    assert _meta(out / "chmod-octal" / "parent" / "f")[0] == 0o640
    assert _meta(out / "chmod-octal" / "parent")[0] == 0o640
    assert _meta(out / "chmod-octal")[0] == 0o640
    assert _meta(out / "chmod-sym")[0] == 0o755
    # --exclude: dockerignore patterns relative to the source
    assert sorted(os.listdir(out / "excl")) == ["keep.txt", "sub"]
    assert sorted(os.listdir(out / "excl" / "sub")) == ["deep.log"]  # `*.log` is top-level
    assert (out / "unicode" / "ünïcode-файл.txt").read_text() == "U"
    assert (out / "over.txt").read_text() == "F"
    assert (out / "overdir" / "x" / "f").read_text() == "old\n"  # dirs merge
    # --from keeps owners and modes; the dest dir made for a dir copy is 0:0
    assert _meta(out / "fromstage") == (0o755, 0, 0)
    assert _meta(out / "fromstage" / "d") == (0o701, 7, 8)
    assert _meta(out / "fromstage" / "d" / "f") == (0o644, 7, 8)
    assert os.readlink(out / "fromstage" / "lnk") == "d/f"
    assert (out / "fromlink").read_text() == "x\n" and _meta(out / "fromlink")[1:] == (7, 8)


PARENTS = """\
FROM busybox AS base
WORKDIR /test
RUN mkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2 \\
 && touch a/b/c/d/foo a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz \\
 && chown 5:6 a/b/c && chmod 0700 a/b/c

FROM busybox
COPY --parents foo1/foo2/bar /ctx1/
WORKDIR /test
COPY --parents foo1/foo2/ba* .
COPY --parents x/./**/*.txt /ctx2/
COPY --from=base --parents /test/a/b/./c/d /middle/
COPY --from=base --parents /test/a/b/c/d/. /end/
COPY --from=base --parents ./test/a/b/c/d /start/
COPY --from=base --parents /test/a/./b/./c /double/
COPY --from=base --parents /test/a/./*/c /wildcard/
COPY --from=base --parents /test/a/b*/./c/**/e /doublewildcard/
COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /doubleinputs/
COPY --from=base --parents /test/a/b2*/c /wildcard-nonexistent/
COPY --from=base --parents /test/a/b/./c2* /wildcard-afterpivot/
COPY --from=base --parents /test/a/b/./nomatch* /wildcard-none/
COPY --from=base --parents /test/a/nomatch*/./c /wildcard-pivot-none/
"""


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_copy_parents(pybuild: PybuildRunner, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "foo1" / "foo2").mkdir(parents=True)
    (ctx / "foo1" / "foo2" / "bar").write_text("testing")
    (ctx / "foo1" / "foo2" / "baz").write_text("testing2")
    (ctx / "foo1" / "other").write_text("no")
    (ctx / "x" / "y" / "z").mkdir(parents=True)
    (ctx / "x" / "y" / "z" / "t.txt").write_text("t")
    (ctx / "x" / "y" / "u.md").write_text("u")
    (ctx / "x" / "top.txt").write_text("top")
    (ctx / "x" / "y").chmod(0o750)
    (ctx / "Dockerfile").write_text(PARENTS)
    out = tmp_path / "out"
    _build(pybuild, ctx, out)

    assert _tree(out / "ctx1") == {"foo1", "foo1/foo2", "foo1/foo2/bar"}
    assert (out / "ctx1" / "foo1" / "foo2" / "bar").read_text() == "testing"
    assert _tree(out / "test") == {"foo1", "foo1/foo2", "foo1/foo2/bar", "foo1/foo2/baz"}
    assert _tree(out / "ctx2") == {"top.txt", "y", "y/z", "y/z/t.txt"}
    assert _meta(out / "ctx2" / "y") == (0o750, 0, 0)  # parents made with source metadata
    assert {"c", "c/d", "c/d/e", "c/d/foo", "c/d/e/bay"} == _tree(out / "middle")
    assert _meta(out / "middle" / "c") == (0o700, 5, 6)
    assert "test/a/b/c/d/foo" in _tree(out / "end")
    assert "test/a/b/c/d/e/bay" in _tree(out / "start")
    assert "b/c/d/foo" in _tree(out / "double") and "b/c/d/e" in _tree(out / "double")
    assert {"b/c/d/e", "b2/c/d/e/bar"} <= _tree(out / "wildcard")
    assert {"c/d/e/bay", "c/d/e/bar"} <= _tree(out / "doublewildcard")
    got = _tree(out / "doubleinputs")
    assert {"d/e/baz", "d/e2/baz", "c/d/e/bar"} <= got and "d/e/bay" not in got
    got = _tree(out / "wildcard-nonexistent")  # pivot `/`, include `test/a/b2*/c`
    assert "test/a/b2/c/d/e/bar" in got and not any(p.startswith("a") for p in got)
    assert (out / "wildcard-none").is_dir() and _tree(out / "wildcard-none") == set()
    assert not (out / "wildcard-pivot-none").exists()
    assert _tree(out / "wildcard-afterpivot") == {"c2", "c2/d", "c2/d/e", "c2/d/e/baz",
                                                  "c2/d/e2", "c2/d/e2/baz"}


@pytest.mark.parametrize(("dockerfile", "message"), [
    ("FROM busybox AS b\nRUN mkdir -p /test/a\nFROM busybox\n"
     "COPY --from=b --parents /test/nonexistent-file /out/\n",
     '"/test/nonexistent-file": not found'),
    ("FROM busybox\nCOPY --parents a/nonexistent /out/\n", '"/a/nonexistent": not found'),
    ("FROM busybox\nCOPY missing.txt /out/\n", "/missing.txt: not found"),
])
def test_copy_missing_source_is_an_error(pybuild: PybuildRunner, tmp_path: Path,
                                         dockerfile: str, message: str) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "a").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    r = pybuild("build", str(ctx))
    assert r.code != 0
    assert message in r.err


# -- F13: sources that lead nowhere, files that cannot be read --------------------------


def _links_ctx(ctx: Path) -> Path:
    ctx.mkdir(parents=True)
    os.symlink("/etc/shadow", ctx / "shadowlink")
    os.symlink("/etc", ctx / "etcdir")
    os.symlink("..", ctx / "up")
    return ctx


@pytest.mark.parametrize(("source", "link", "inside"), [
    ("shadowlink", "shadowlink is a symbolic link to /etc/shadow", "/etc/shadow"),
    ("etcdir", "etcdir is a symbolic link to /etc", "/etc"),
    ("etcdir/passwd", "etcdir is a symbolic link to /etc", "/etc"),
    ("up/etc/passwd", "", ""),
])
def test_a_source_leading_out_of_the_context_is_not_found(
        pybuild: PybuildRunner, tmp_path: Path, source: str, link: str, inside: str) -> None:
    ctx = _links_ctx(tmp_path / "ctx")
    (ctx / "Dockerfile").write_text(f"FROM busybox\nCOPY {source} /x\n")
    r = pybuild("build", str(ctx))
    assert r.code == 1, r.err
    assert "internal error" not in r.err and "Traceback" not in r.err
    assert f"/{source}: not found in the build context" in r.err
    if link:
        assert link in r.err and f"(to {inside}, which does not exist)" in r.err


def test_up_link_copies_the_context_itself(pybuild: PybuildRunner, tmp_path: Path) -> None:
    # `up -> ..` from the root is the root (links resolve inside): BuildKit copies it too
    ctx = _links_ctx(tmp_path / "ctx")
    (ctx / "f").write_text("F")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY up /x/\n")
    out = tmp_path / "out"
    r = pybuild("build", "-o", f"type=local,dest={out}", str(ctx))
    assert r.code == 0, r.err
    assert (out / "x" / "f").read_text() == "F"


def test_unreadable_context_files_as_the_test_user(base_layout: Path) -> None:
    """As pbtester, a root-owned 0600 file in the context (and a 0700 dir) is a one-line
    'cannot read' naming it, for the cache key's read and for the direct context layer;
    a link out is 'not found', as for root."""
    import pwd
    import shutil

    from tests.integration.conftest import rootless_root, run_pybuild, traversable_dir

    try:
        pwd.getpwnam("pbtester")
    except KeyError:
        from tests.tooling import missing

        missing("test user pbtester does not exist (run scripts/setup.sh as root)")
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the test user")
    work = traversable_dir("pybuild-f13-")
    try:
        root = rootless_root(work, "pbtester", base_layout)
        cases = {
            "file": ("COPY secret /x\n", "cannot read", "secret"),
            "many": ("COPY many/ /many/\n", "cannot read", "many/f63"),  # the layer path
            "dir": ("COPY closed /x\n", "cannot read", "closed"),
            "link": ("COPY shadowlink /x\n", "not found in the build context",
                     "shadowlink is a symbolic link to /etc/shadow"),
        }
        for name, (copy, message, what) in cases.items():
            ctx = _links_ctx(work / f"ctx-{name}")
            (ctx / "Dockerfile").write_text("FROM busybox\n" + copy)
            (ctx / "secret").write_text("s")
            (ctx / "secret").chmod(0o600)
            (ctx / "closed").mkdir()
            (ctx / "closed" / "f").write_text("f")
            (ctx / "closed").chmod(0o700)
            (ctx / "many").mkdir()
            for i in range(80):  # a context COPY big enough for the direct layer
                (ctx / "many" / f"f{i}").write_text(str(i))
            (ctx / "many" / "f63").chmod(0o600)
            for p in (ctx, ctx / "Dockerfile", ctx / "many", *(ctx / "many").iterdir()):
                if p.name != "f63":
                    os.lchown(p, pwd.getpwnam("pbtester").pw_uid, -1)
            r = run_pybuild(root, "build", str(ctx), user="pbtester")
            assert r.code == 1, (name, r.err)
            assert "internal error" not in r.err and "Traceback" not in r.err, (name, r.err)
            assert message in r.err and what in r.err, (name, r.err)
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""COPY / ADD (BEHAVIOURS.md §6-§7): dest rules, flags, heredocs, --parents, --link."""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.llb import CopyAction, FileOp, MkfileAction, SourceOp


def copies(fe, df: str, **opts) -> list[CopyAction]:
    r = fe.compile(df, **opts)
    d = r.definition
    out = []
    for x in d.topological():
        op = d.ops[x]
        if isinstance(op, FileOp):
            out.extend(a for a in op.actions if isinstance(a, CopyAction))
    return out


@pytest.mark.parametrize(("workdir", "dest", "want", "is_dir"), [
    ("/", "/a/", "/a", True),
    ("/", "/a", "/a", False),
    ("/w", "rel", "/w/rel", False),
    ("/w", ".", "/w", True),
    ("/w", "./", "/w", True),
    ("/w", "sub/.", "/w/sub", True),
    ("/w", "..", "/", False),
    ("/", "/", "/", True),
])
def test_dest_rules(fe, workdir, dest, want, is_dir):
    """testCopyRelative / testEmptyDestDir / testPreserveDestDirSlash."""
    (a,) = copies(fe, f"FROM busybox\nWORKDIR {workdir}\nCOPY f {dest}\n")
    assert (a.dest, a.dest_is_dir) == (want, is_dir)


def test_empty_dest_from_expansion(fe):
    """testEmptyDestDir: "" means WORKDIR."""
    (a,) = copies(fe, "FROM busybox\nWORKDIR /w\nENV E=\nCOPY f $E\n")
    assert (a.dest, a.dest_is_dir) == ("/w", True)


def test_sources_relative_to_context_root(fe):
    """testWorkdirCopyIgnoreRelative: sources ignore WORKDIR; `..` cannot escape."""
    acts = copies(fe, "FROM busybox\nWORKDIR /foo\nCOPY ../../x dir/ sub/. * /d/\n")
    assert [a.sources for a in acts] == [("/x",), ("/dir",), ("/sub",), ("/*",)]
    assert all(a.allow_wildcard and a.allow_empty_wildcard and a.follow_symlinks for a in acts)
    assert all(a.from_context for a in acts)


def test_chown_chmod_expanded(fe):
    """testDockerfileAddChownExpand / testCopyChmod."""
    (a,) = copies(fe, "FROM busybox\nARG owner=1000 group=nobody mode=751\n"
                      "COPY --chown=${owner}:${group} --chmod=${mode} f /f\n")
    assert (a.chown.user, a.chown.group, a.chmod) == ("1000", "nobody", "751")
    (a,) = copies(fe, "FROM busybox\nCOPY --chown=daemon f /f\n")
    assert (a.chown.user, a.chown.group) == ("daemon", "")


@pytest.mark.parametrize("mode", ["644", "0644", "0", "7777", "u+x", "a=rX", "u=rwx,go=rx",
                                  "+x", "u-w+x", "g=u", "ugo+rwxst"])
def test_chmod_valid(fe, mode):
    """testCopyChmod / testChmodNonOctal: octal 0-07777 or symbolic (dchapes-mode)."""
    (a,) = copies(fe, f"FROM busybox\nCOPY --chmod={mode} f /f\n")
    assert a.chmod == mode


@pytest.mark.parametrize("mode", ["10000", "64a", "8", "u", "u+y", "x+r", "u+x,", "0x1ff"])
def test_chmod_invalid(fe, mode):
    """testCopyInvalidChmod / testAddInvalidChmod."""
    with pytest.raises(UserError) as e:
        fe.compile(f"FROM busybox\nCOPY --chmod={mode} f /f\n")
    assert mode in e.value.message
    assert e.value.location.start_line == 2


def test_copy_from_keeps_owners(fe):
    """testCopyChownExistingDir: files --from a stage keep their owners (from_context)."""
    (a,) = copies(fe, "FROM busybox AS s\nFROM busybox\nCOPY --from=s /etc /etc\n")
    assert a.from_context is False and a.chown is None


def test_copy_from_scratch_stage(fe):
    acts = copies(fe, "FROM scratch AS s\nFROM busybox\nCOPY --from=s /x* /\n")
    assert acts[0].sources == ("/x*",)


def test_parents(fe):
    """testCopyParents / testCopyRelativeParents: pivot at /./, required paths."""
    a, b, c = copies(fe, "FROM busybox\nCOPY --parents a/b/./c/d x/*.txt y/z /out/\n")
    assert (a.sources, a.include_patterns, a.required_paths) == (
        ("/a/b",), ("c/d",), ("/a/b/c/d",))
    assert (b.sources, b.include_patterns, b.required_paths) == (("/",), ("x/*.txt",), ())
    assert (c.sources, c.include_patterns) == (("/",), ("y/z",))
    assert all(x.parents for x in (a, b, c))
    r = fe.compile("FROM busybox\nCOPY --parents a/./b /o/\n")
    assert r.config.history[-1].created_by == "COPY --parents a/./b /o/ # buildkit"


def test_exclude(fe):
    """exclude_patterns_test.go: --exclude is repeatable and not expanded."""
    (a,) = copies(fe, "FROM busybox\nADD --exclude=*.md --exclude=$X . /app\n")
    assert a.exclude == ("*.md", "$X")


def test_link(fe):
    """testCopyLinkDotDestDir: --link sets the link flag; with --chmod it falls back."""
    (a,) = copies(fe, "FROM busybox\nCOPY --link f /f\n")
    assert a.link
    (a,) = copies(fe, "FROM busybox\nCOPY --link --chmod=644 f /f\n")
    assert not a.link
    assert copies(fe, "FROM busybox\nCOPY f /f\n")[0] != a


def test_add_unpack(fe):
    """testDockerfileAddArchive: ADD unpacks local archives unless --unpack=false."""
    assert copies(fe, "FROM busybox\nADD a.tar /\n")[0].unpack
    assert not copies(fe, "FROM busybox\nADD --unpack=false a.tar /\n")[0].unpack
    assert not copies(fe, "FROM busybox\nCOPY a.tar /\n")[0].unpack


def test_heredoc_sources(fe):
    """testCopyHeredoc: each heredoc becomes a 0644 file named after the delimiter."""
    r = fe.compile("FROM busybox\nCOPY <<EOF <<EOF2 double/\nhello\nEOF\nworld\nEOF2\n")
    d = r.definition
    acts = [a for op in d.ops.values() if isinstance(op, FileOp) and op.base is not None
            for a in op.actions]
    assert [a.sources for a in acts] == [("/EOF",), ("/EOF2",)]
    docs = {a.sources[0]: d.ops[a.source.op].actions[0] for a in acts}
    assert isinstance(docs["/EOF"], MkfileAction)
    assert docs["/EOF"].data == b"hello\n" and docs["/EOF"].mode == 0o644
    assert r.config.history[-1].created_by == "COPY <<EOF <<EOF2 double/ # buildkit"


def _heredoc_data(fe, df: str) -> bytes:
    r = fe.compile(df)
    d = r.definition
    (mk,) = [op.actions[0] for op in d.ops.values()
             if isinstance(op, FileOp) and isinstance(op.actions[0], MkfileAction)]
    return mk.data


def test_heredoc_expansion_rules(fe):
    """testHeredocVarSubstitution / testCopyHeredocSpecialSymbols: unquoted delimiters
    expand ENV/ARG, `\\` escapes always, quotes stay literal; quoted ones copy verbatim."""
    df = ("FROM busybox\nARG name=world\nCOPY <<EOF /f\nHello '${name}'! \\$x \\\\ "
          "\"q\"\nEOF\n")
    assert _heredoc_data(fe, df) == b"Hello 'world'! $x \\ \"q\"\n"
    df = "FROM busybox\nARG name=world\nCOPY <<'EOF' /f\nHello ${name} \\$x\nEOF\n"
    assert _heredoc_data(fe, df) == b"Hello ${name} \\$x\n"
    df = "FROM busybox\nCOPY <<-EOF /f\n\t\tindented\n\tEOF\n"
    assert _heredoc_data(fe, df) == b"indented\n"


def test_copy_from_variable_rejected(fe):
    """testDockerfileCopyFromArgs."""
    with pytest.raises(UserError, match="variable expansion is not supported for --from"):
        fe.compile("ARG X=busybox\nFROM busybox\nCOPY --from=$X /a /a\n")


def test_context_source_carries_dockerignore(fe):
    r = fe.compile("FROM busybox\nCOPY . /\n", dockerignore=("*.md", "!README.md"))
    ctx = next(op for op in r.definition.ops.values() if isinstance(op, SourceOp)
           and op.identifier == "local://context")
    assert ctx.attrs == (("exclude", "*.md\n!README.md"),)


def test_git_and_url_forms(fe):
    """testAddGit / testGitQueryString / testDockerfileADDFromURL: remote sources become
    git:// and http(s):// source ops (tests/unit/test_add_frontend.py has the details)."""
    for src, ident in (("https://github.com/moby/buildkit.git#v0.10.1:docs",
                        "git://github.com/moby/buildkit.git"),
                       ("git@github.com:moby/buildkit.git", "git://git@github.com:moby/buildkit.git"),
                       ("ssh://git@h/r.git", "git://git@h/r.git"),
                       ("https://h/r.git?ref=main&subdir=x", "git://h/r.git"),
                       ("http://example.com/file.tar.gz", "http://example.com/file.tar.gz")):
        r = fe.compile(f"FROM busybox\nADD {src} /x\n")
        idents = {op.identifier for op in r.definition.ops.values() if isinstance(op, SourceOp)}
        assert ident in idents
    with pytest.raises(UserError, match="checksum mismatch"):
        fe.compile("FROM busybox\nADD --checksum=abc https://h/r.git?checksum=def /x\n")
    with pytest.raises(UserError, match="invalid checksum digest length"):
        fe.compile("FROM busybox\nADD --checksum=sha256:abc https://h/f /x\n")

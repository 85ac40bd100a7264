"""The CLI's edge, as buildx reads its flags: git refs, secrets, ssh, named contexts, cache
keys, annotations, platforms, --pull/--load spellings, sizes, templates, argv rewrites."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pybuild.cli import flags
from pybuild.cli.main import _parser, _rewrite, _wanted
from pybuild.cli.template import Template, align
from pybuild.contexts import is_archive, unpack
from pybuild.errors import UserError
from pybuild.gc import PrunePolicy
from pybuild.gitref import is_remote_url, parse_git_ref
from pybuild.oci.platform import Platform, host
from pybuild.units import docker_size, human_duration, parse_ram_size

# -- git references (BuildKit's dfgitutil.ParseGitRef) -----------------------------------------


@pytest.mark.parametrize(("text", "remote", "ref", "subdir"), [
    ("https://github.com/moby/buildkit.git", "https://github.com/moby/buildkit.git", "", ""),
    ("https://host/org/repo.git#v1.2:docs/dir", "https://host/org/repo.git", "v1.2", "docs/dir"),
    ("https://host/repo.git#:sub", "https://host/repo.git", "", "sub"),
    ("git@github.com:moby/buildkit.git#main", "git@github.com:moby/buildkit.git", "main", ""),
    ("git://127.0.0.1/app.git#main:sub/", "git://127.0.0.1/app.git", "main", "sub"),
    ("ssh://git@host/repo.git#abc", "ssh://git@host/repo.git", "abc", ""),
    ("https://host/repo.git?ref=v1&subdir=/a/b", "https://host/repo.git", "v1", "a/b"),
    ("https://host/repo.git?tag=v2", "https://host/repo.git", "refs/tags/v2", ""),
    ("https://host/repo.git?branch=dev", "https://host/repo.git", "refs/heads/dev", ""),
    ("github.com/moby/buildkit", "https://github.com/moby/buildkit", "", ""),
])
def test_git_refs_parse_as_buildkit(text: str, remote: str, ref: str, subdir: str) -> None:
    g = parse_git_ref(text)
    assert g is not None
    assert (g.remote, g.ref, g.subdir) == (remote, ref, subdir)


@pytest.mark.parametrize("text", ["https://host/ctx.tar.gz", "./dir", "../x", "dir/sub",
                                  "file:///srv/repo.git", "/abs/path", "ftp://host/x.git"])
def test_not_git_refs(text: str) -> None:
    assert parse_git_ref(text) is None


def test_git_query_errors_name_the_query() -> None:
    with pytest.raises(UserError, match="unexpected query 'bogus'"):
        parse_git_ref("https://h/r.git?bogus=1")
    with pytest.raises(UserError, match="ref conflicts"):
        parse_git_ref("https://h/r.git?ref=a#b")
    with pytest.raises(UserError, match="branch conflicts with tag"):
        parse_git_ref("https://h/r.git?tag=a&branch=b")
    assert parse_git_ref("https://h/r.git?keep-git-dir=true").keep_git_dir  # type: ignore[union-attr]
    assert not parse_git_ref("https://h/r.git?submodules=false").submodules  # type: ignore[union-attr]


def test_remote_urls_as_buildx() -> None:
    assert is_remote_url("https://host/ctx.tar.gz")
    assert is_remote_url("git@host:x.git")
    assert not is_remote_url("some/dir")


# -- --secret, --ssh, --build-context ----------------------------------------------------


def test_secret_forms() -> None:
    s = flags.parse_secret("id=npmrc,src=/tmp/f")
    assert (s.id, s.file, s.env) == ("npmrc", "/tmp/f", "")
    s = flags.parse_secret("id=tok,env=TOKEN")
    assert (s.id, s.env) == ("tok", "TOKEN")
    s = flags.parse_secret("type=env,id=tok,src=TOKEN")  # buildx: type=env moves src to env
    assert (s.env, s.file) == ("TOKEN", "")
    s = flags.parse_secret("id=NAME")  # neither: $NAME, else the file NAME, at build time
    assert (s.id, s.file, s.env, s.data) == ("NAME", "", "", None)
    s = flags.parse_secret('"id=a,b",source=/x')  # one CSV record
    assert (s.id, s.file) == ("a,b", "/x")


@pytest.mark.parametrize(("text", "message"), [
    ("id=x,srcc=f", "unknown key 'srcc' (did you mean 'src'?)"),
    ("id=x,evn=V", "unknown key 'evn' (did you mean 'env'?)"),
    ("id=x,type=fiel", "unsupported secret type 'fiel' (did you mean 'file'?)"),
    ("src=/f", "the secret has no id"),
    ("id=x,src=/f,env=V", "give src or env, not both"),
    ("id", "must be a key=value pair"),
])
def test_secret_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        flags.parse_secret(text)
    assert message in err.value.message


def test_ssh_forms(tmp_path: Path) -> None:
    import socket

    assert flags.parse_ssh("default").socket == ""
    key, key2 = tmp_path / "id_ed25519", tmp_path / "id_rsa"
    key.write_text("k")
    key2.write_text("k")
    assert flags.parse_ssh(f"k={key}").keys == (str(key),)
    assert flags.parse_ssh(f"k={key},{key2}").keys == (str(key), str(key2))
    sock = tmp_path / "s"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock))
    try:
        assert flags.parse_ssh(f"k={sock}").socket == str(sock)
        with pytest.raises(UserError, match="invalid combination of keys and sockets"):
            flags.parse_ssh(f"k={sock},{key}")
        with pytest.raises(UserError, match="only single socket allowed"):
            flags.parse_ssh(f"k={sock},{sock}")
    finally:
        srv.close()
    with pytest.raises(UserError, match="No such file"):
        flags.parse_ssh(f"k={tmp_path}/missing")
    with pytest.raises(UserError, match="/dev/null is not an agent socket nor a key file"):
        flags.parse_ssh("k=/dev/null")
    with pytest.raises(UserError, match="takes ID"):
        flags.parse_ssh("id=default")


def test_build_context_forms() -> None:
    name, nc = flags.parse_build_context("docker.io/library/alpine:latest=docker-image://bb")
    assert name == "alpine" and (nc.kind, nc.value) == ("image", "bb")
    assert flags.parse_build_context("src=https://h/r.git#main")[1].kind == "git"
    assert flags.parse_build_context("src=git@h:r.git")[1].kind == "git"
    assert flags.parse_build_context("src=https://h/a.tar.gz")[1].kind == "http"
    assert flags.parse_build_context("src=./dir")[1].kind == "local"
    with pytest.raises(UserError, match="did you mean 'docker-image://'"):
        flags.parse_build_context("x=docker-imag://bb")
    with pytest.raises(UserError, match="bake only"):
        flags.parse_build_context("x=target:base")
    with pytest.raises(UserError, match="NAME=VALUE"):
        flags.parse_build_context("novalue")


# -- --cache-to / --cache-from keys ---------------------------------------------------------------


def test_cache_keys_are_checked() -> None:
    assert flags.check_cache_option("type=local,dest=/d,mode=max,ignore-error=1",
                                    "--cache-to") == ["type=local,dest=/d,mode=max,"
                                                      "ignore-error=true"]
    assert flags.check_cache_option("a/b:c,d/e:f", "--cache-from") == ["a/b:c", "d/e:f"]
    assert flags.check_cache_option("type=registry,ref=r,oci-mediatypes=true,"
                                    "image-manifest=true", "--cache-to") == ["type=registry,"
                                                                             "ref=r"]
    cases = {
        ("type=local,dest=/d,mdoe=max", "--cache-to"): "unknown key 'mdoe' (did you mean 'mode'?)",
        ("type=local,src=/d", "--cache-to"): "src= is a key of --cache-from",
        ("type=registry,ref=r,compression-level=9", "--cache-to"): "compression-level",
        ("type=local,dest=/d,ignore-error=maybe", "--cache-to"): "not a boolean",
        ("type=local,dest=/d,image-manifest=false", "--cache-to"): "not supported",
        ("type=registry,ref=r,mode=max", "--cache-from"): "mode= is a key of --cache-to",
        ("type=registry,ref=r,tga=x", "--cache-from"): "unknown key 'tga'",
    }
    for (text, flag), message in cases.items():
        with pytest.raises(UserError) as err:
            flags.check_cache_option(text, flag)
        assert message in err.value.message, (text, err.value.message)


# -- annotations, labels, hosts, ulimits, sizes ------------------------------------------------


def test_annotations_as_buildx() -> None:
    [a] = flags.parse_annotation("org.opencontainers.image.title=x")
    assert (a.level, a.key, a.value) == ("manifest", "org.opencontainers.image.title", "x")
    both = flags.parse_annotation("index,manifest-descriptor:k=v=w")
    assert [(x.level, x.key, x.value) for x in both] == [("index", "k", "v=w"),
                                                         ("manifest-descriptor", "k", "v=w")]
    with pytest.raises(UserError, match="did you mean 'manifest'"):
        flags.parse_annotation("manfest:k=v")
    [p] = flags.parse_annotation("manifest[linux/arm64/v8]:k=v")
    assert (p.level, str(p.platform), p.key) == ("manifest", "linux/arm64", "k")
    with pytest.raises(UserError, match="belong to the whole index"):
        flags.parse_annotation("index[linux/amd64]:k=v")
    with pytest.raises(UserError, match="invalid platform"):
        flags.parse_annotation("manifest[linux/a/b/c]:k=v")


def test_labels_and_build_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.cli.build_command import parse_build_args, parse_labels

    monkeypatch.setenv("FROM_ENV", "e")
    assert parse_labels(["a=1", "b", "c="]) == (("a", "1"), ("b", ""), ("c", ""))
    assert parse_labels(["FROM_ENV"]) == (("FROM_ENV", ""),)  # never from the environment
    monkeypatch.delenv("UNSET_ARG", raising=False)
    assert parse_build_args(["FROM_ENV", "UNSET_ARG", "x=1"]) == (("FROM_ENV", "e"),
                                                                   ("x", "1"))


def test_hosts_ulimits_sizes() -> None:
    assert flags.parse_add_host("db:10.0.0.2") == [("db", "10.0.0.2")]
    assert flags.parse_add_host("v6=[::1]") == [("v6", "::1")]
    assert flags.parse_add_host("gw:host-gateway") == [("gw", "host-gateway")]
    with pytest.raises(UserError, match="not an IP address"):
        flags.parse_add_host("db:nope")
    u = flags.parse_ulimit("nofile=1024:2048")
    assert (u.name, u.soft, u.hard) == ("nofile", 1024, 2048)
    with pytest.raises(UserError, match="did you mean 'nofile'"):
        flags.parse_ulimit("nofiles=1")
    with pytest.raises(UserError, match="soft limit exceeds"):
        flags.parse_ulimit("nproc=10:5")
    assert parse_ram_size("64m") == 64 << 20 and parse_ram_size("1GiB") == 1 << 30
    assert docker_size(2133944) == "2.13MB" and docker_size(512) == "512B"
    assert human_duration(0.5) == "Less than a second" and human_duration(7300) == "2 hours"


def test_platforms_pull_load() -> None:
    amd = Platform(os="linux", architecture="amd64")
    arm = Platform(os="linux", architecture="arm64")
    assert flags.parse_platforms(["linux/amd64,linux/arm64", "linux/amd64"]) == (amd, arm)
    assert flags.parse_platforms(["local"]) == (host(),)
    assert [flags.parse_pull(v) for v in ("true", "1", "false", "always", "never",
                                          "missing")] == ["always", "always", "missing",
                                                          "always", "never", "missing"]
    with pytest.raises(UserError, match="invalid --pull"):
        flags.parse_pull("newer")
    assert [flags.parse_load(v) for v in ("auto", "true", "false", "podman", "docker")] == [
        "auto", "auto", None, "podman", "docker"]


# -- argv rewrites, parsers --------------------------------------------------------------------


def test_pull_and_load_take_values_only_after_equals() -> None:
    assert _rewrite(["build", "--pull", "."]) == ["build", "--pull=true", "."]
    assert _rewrite(["build", "--pull", "never", "."]) == ["build", "--pull=never", "."]
    assert _rewrite(["build", "--pull=false", "."]) == ["build", "--pull=false", "."]
    assert _rewrite(["--root", "r", "build", "--load", "-t", "x", "."]) == [
        "--root", "r", "build", "--load=auto", "-t", "x", "."]
    assert _rewrite(["build", "--", "--load"]) == ["build", "--", "--load"]
    args = _parser("build").parse_args(_rewrite(["build", "--load", "--pull", "ctx"]))
    assert (args.load, args.pull, args.context) == ("auto", "true", "ctx")


def test_docker_spellings() -> None:
    assert _rewrite(["history", "app:1"]) == ["image-history", "app:1"]
    assert _rewrite(["history", "ls"]) == ["history", "ls"]  # the build records' command
    assert _rewrite(["image", "ls", "-q"]) == ["images", "-q"]
    assert _rewrite(["image", "rm", "-f", "x"]) == ["rmi", "-f", "x"]
    assert _wanted(["--root", "r", "build", "."]) == "build"
    assert _wanted(["build", "--help"]) is None


def test_refused_buildx_flags_name_themselves() -> None:
    with pytest.raises(UserError, match="--squash is not supported"):
        _parser("build").parse_args(["build", "--squash", "."])
    with pytest.raises(UserError, match="--cgroup-parent is not supported"):
        _parser("build").parse_args(["build", "--cgroup-parent=x", "."])


def test_completion_and_man_page_come_from_the_parser() -> None:
    from pybuild.cli.manpage import completion, man_page

    parser = _parser()
    bash = completion(parser, "bash")
    assert "complete -o filenames -F _pybuild pybuild" in bash
    assert "--build-context" in bash and "--max-used-space" in bash
    assert "default none host" in bash  # --network's choices
    zsh = completion(parser, "zsh")
    assert zsh.startswith("#compdef pybuild") and "'--secret=[" in zsh
    man = man_page(parser)
    assert man.startswith(".TH PYBUILD 1")
    assert '.SS "history"' in man and "\\-\\-iidfile" in man
    assert "image-history" not in man


# -- templates ---------------------------------------------------------------------------------

DATA = {"Repository": "app", "Tag": "1", "ID": "abc", "Config": {"Env": ["A=1"],
                                                                 "Labels": {"k": "v"}},
        "RepoTags": ["app:1", "app:2"], "Nil": None, "Zero": 0}


@pytest.mark.parametrize(("fmt", "out"), [
    ("{{.Repository}}:{{.Tag}}", "app:1"),
    ("{{json .Config}}", '{"Env":["A=1"],"Labels":{"k":"v"}}'),
    ("{{.Config.Env}}", "[A=1]"),
    ("{{.Config.Labels}}", "map[k:v]"),
    ('{{join .RepoTags ", "}}', "app:1, app:2"),
    ('{{index .Config.Labels "k"}}', "v"),
    ("{{index .RepoTags 1}}", "app:2"),
    ("{{range .RepoTags}}<{{.}}>{{end}}", "<app:1><app:2>"),
    ("{{if .Nil}}a{{else if .Zero}}b{{else}}c{{end}}", "c"),
    ("{{with .Config}}{{len .Env}}{{end}}", "1"),
    ("{{.Missing}}", "<no value>"),
    ("{{.Nil}}", "<nil>"),
    ("{{.Config | json}}", '{"Env":["A=1"],"Labels":{"k":"v"}}'),
    ('{{printf "%s@%s" .Repository .ID}}', "app@abc"),
    ("{{upper .Repository}} {{truncate .ID 2}}", "APP ab"),
    ("a  {{- .Tag -}}  b", "a1b"),
])
def test_template_subset(fmt: str, out: str) -> None:
    assert Template(fmt).render(DATA) == out


@pytest.mark.parametrize(("fmt", "message"), [
    ("{{.Repository", "unclosed action"),
    ("{{exec .X}}", 'function "exec" not defined'),
    ("{{if .X}}a", "has no {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{.Repository.Sub}}", "can't evaluate field Sub"),
    ("{{__import__}}", 'function "__import__" not defined'),
])
def test_template_errors(fmt: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        Template(fmt).render(DATA)
    assert message in err.value.message


def test_table_format_aligns_like_docker() -> None:
    t = Template("table {{.Repository}}\t{{.Tag}}\t{{.ID}}",
                 {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID"})
    lines = align([t.header(), t.render(DATA)])
    assert lines == ["REPOSITORY   TAG       IMAGE ID", "app          1         abc"]


# -- context archives --------------------------------------------------------------------------


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in entries:
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
           mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    return info


def test_archive_sniffing() -> None:
    assert is_archive(b"\x1f\x8b\x08\x00")
    assert is_archive(b"BZh91")
    assert is_archive(b"\xfd7zXZ\x00\x00")
    assert is_archive(_tar([_entry("a")], {"a": b"x"})[:1024])
    assert not is_archive(b"FROM busybox\nRUN true\n" + b" " * 600)


def test_unpack_keeps_modes_and_links(tmp_path: Path) -> None:
    data = _tar([_entry("d", tarfile.DIRTYPE, mode=0o750),
                 _entry("d/run.sh", mode=0o4755), _entry("d/abs", tarfile.SYMTYPE, "/etc"),
                 _entry("d/hard", tarfile.LNKTYPE, "d/run.sh")], {"d/run.sh": b"#!/bin/sh\n"})
    dest = tmp_path / "ctx"
    dest.mkdir()
    unpack(io.BytesIO(data), dest, "test")
    assert (dest / "d" / "run.sh").stat().st_mode & 0o7777 == 0o4755
    assert os.readlink(dest / "d" / "abs") == "/etc"  # kept, never followed
    assert (dest / "d" / "hard").read_bytes() == b"#!/bin/sh\n"
    assert (dest / "d").stat().st_mode & 0o777 == 0o750


@pytest.mark.parametrize(("entries", "message"), [
    ([_entry("../escape")], "climbs out"),
    ([_entry("a", tarfile.SYMTYPE, "/etc"), _entry("a/passwd")], "goes through a"),
    ([_entry("h", tarfile.LNKTYPE, "../../etc/shadow")], "climbs out"),
    ([_entry("h", tarfile.LNKTYPE, "missing")], "not an earlier file"),
    ([_entry("dev", tarfile.CHRTYPE)], "device node or a FIFO"),
    ([_entry("fifo", tarfile.FIFOTYPE)], "device node or a FIFO"),
])
def test_unpack_refuses_escapes(tmp_path: Path, entries: list[tarfile.TarInfo],
                                message: str) -> None:
    dest = tmp_path / "ctx"
    dest.mkdir()
    with pytest.raises(UserError) as err:
        unpack(io.BytesIO(_tar(entries, {e.name: b"x" for e in entries if e.isreg()})), dest,
               "test")
    assert message in err.value.message
    assert not (tmp_path / "escape").exists()


# -- prune policy ------------------------------------------------------------------------------


def test_keep_bytes_as_buildkit() -> None:
    gb = 10**9
    assert PrunePolicy().keep_bytes(10 * gb, gb) is None
    assert PrunePolicy(max_used_space=5 * gb).keep_bytes(10 * gb, gb) == 5 * gb
    # min free 4GB with 1GB free: 3GB must go
    assert PrunePolicy(min_free_space=4 * gb).keep_bytes(10 * gb, gb) == 7 * gb
    assert PrunePolicy(min_free_space=gb).keep_bytes(10 * gb, 2 * gb) == 10 * gb
    assert PrunePolicy(max_used_space=5 * gb, min_free_space=4 * gb,
                       reserved_space=6 * gb).keep_bytes(10 * gb, gb) == 6 * gb
    assert PrunePolicy(keep_storage=3 * gb).keep_bytes(10 * gb, gb) == 3 * gb

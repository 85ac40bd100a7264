"""RUN (BEHAVIOURS.md §5): forms, heredocs, --mount, --network, --security."""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.llb import ExecOp, FileOp, MkfileAction
from pybuild.oci.platform import Platform


def last_exec(fe, df: str, **opts) -> ExecOp:
    return fe.execs(df, **opts)[-1]


def test_shell_and_exec_form(fe):
    """testIgnoreEntrypoint / testInvalidJSONCommands."""
    assert last_exec(fe, "FROM busybox\nRUN echo  hi\n").args == ("/bin/sh", "-c", "echo  hi")
    assert last_exec(fe, 'FROM busybox\nRUN ["echo", "$HOME"]\n').args == ("echo", "$HOME")
    op = last_exec(fe, 'FROM busybox\nRUN ["echo","hello"]this is invalid\n')
    assert op.args == ("/bin/sh", "-c", '["echo","hello"]this is invalid')


def test_windows_default_shell(fe):
    fe.resolver.images["win"] = fe.resolver.images["busybox"].replace(os="windows")
    op = last_exec(fe, "FROM win\nRUN dir\n",
                   platform=Platform(os="windows", architecture="amd64"))
    assert op.args == ("cmd", "/S", "/C", "dir")


def test_env_user_cwd(fe):
    op = last_exec(fe, "FROM busybox\nENV A=1\nUSER nobody\nWORKDIR /w\nRUN x\n")
    assert "A=1" in op.env and op.user == "nobody" and op.cwd == "/w"


def test_heredoc_fake(fe):
    """testRunFakeHeredoc: a lone heredoc body becomes the shell command string."""
    op = last_exec(fe, 'FROM busybox\nSHELL ["/bin/awk"]\nRUN <<EOF\nBEGIN { print 1 }\nEOF\n')
    assert op.args == ("/bin/awk", "BEGIN { print 1 }\n")


def test_heredoc_shebang(fe):
    """testRunShebangHeredoc: a #! body is mounted under /dev/pipes and executed."""
    r = fe.compile("FROM busybox\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n")
    op = next(o for o in r.definition.ops.values() if isinstance(o, ExecOp))
    assert op.args == ("/bin/sh", "-c", "/dev/pipes/EOF")
    m = op.mounts[0]
    assert m.target == "/dev/pipes" and m.readonly
    mk = r.definition.ops[m.input.op]
    assert isinstance(mk, FileOp) and isinstance(mk.actions[0], MkfileAction)
    assert mk.actions[0].mode == 0o755 and mk.actions[0].data.startswith(b"#!")


def test_heredoc_complex(fe):
    """testRunComplexHeredoc: other forms hand the line plus bodies to the shell."""
    op = last_exec(fe, "FROM busybox\nRUN cat <<A | tr a b <<B\nxa\nA\nya\nB\n")
    assert op.args[-1] == "cat <<A | tr a b <<B\nxa\nA\nya\nB"


def test_heredoc_no_expansion_and_chomp(fe):
    """testHeredocVarSubstitution / testHeredocIndent: no builder expansion; <<- strips tabs."""
    op = last_exec(fe, 'FROM busybox\nENV X=1\nRUN <<-EOF\n\techo "$X"\n\t\tx\nEOF\n')
    assert op.args[-1] == 'echo "$X"\nx\n'


def test_heredoc_history_and_description(fe):
    r = fe.compile("FROM busybox\nRUN <<EOF\necho a\necho b\nEOF\n")
    assert r.config.history[-1].created_by == "RUN /bin/sh -c echo a\necho b\n # buildkit"
    descs = [m.description for m in r.definition.metadata.values()]
    assert any(d.endswith("RUN <<EOF (echo a...)") for d in descs)


def test_mount_bind_defaults(fe):
    """testMountContext: bind from the context, read-only by default."""
    m = last_exec(fe, "FROM busybox\nRUN --mount=target=/ctx,source=sub cat\n").mounts[0]
    assert (m.type, m.target, m.selector, m.readonly) == ("bind", "/ctx", "/sub", True)
    m = last_exec(fe, "FROM busybox\nRUN --mount=target=/ctx,rw cat\n").mounts[0]
    assert not m.readonly


def test_mount_relative_target(fe):
    """BEHAVIOURS §5: a relative target is resolved against WORKDIR."""
    m = last_exec(fe, "FROM busybox\nWORKDIR /w\nRUN --mount=type=tmpfs,target=t x\n").mounts[0]
    assert m.target == "/w/t"


def test_cache_mount_default_id(fe):
    """testCacheMountDefaultID: id defaults to the cleaned target; seeded from scratch."""
    op = last_exec(fe, "FROM busybox\nRUN --mount=type=cache,target=/mycache/ x\n")
    m = op.mounts[0]
    assert m.type == "cache" and m.cache.id == "/mycache" and m.input is None
    assert not m.readonly and m.cache.sharing == "shared"


def test_cache_mount_user_mode(fe):
    """testCacheMountUser."""
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=cache,target=/c,uid=1001,gid=1002,"
                      "mode=0751,sharing=locked x\n").mounts[0]
    assert (m.cache.uid, m.cache.gid, m.cache.mode, m.cache.sharing) == (1001, 1002, 0o751,
                                                                          "locked")


def test_mount_env_var_and_arg(fe):
    """testMountEnvVar / testMountArg / testMountEnvAcrossStages: values are expanded."""
    m = last_exec(fe, "FROM busybox\nENV P=/mycache\nARG T=cache\n"
                      "RUN --mount=type=$T,target=$P x\n").mounts[0]
    assert (m.type, m.target) == ("cache", "/mycache")
    m = last_exec(fe, "FROM busybox AS s1\nENV ID=myc T2=cache\nFROM s1\n"
                      "RUN --mount=type=$T2,id=$ID,target=/w x\n").mounts[0]
    assert m.cache.id == "myc"


def test_mount_from_stage(fe):
    """testMountRWCache: bind from a stage."""
    r = fe.compile("FROM busybox AS build\nRUN mk\nFROM busybox\n"
                   "RUN --mount=from=build,src=out,target=/out,rw x\n")
    ops = [o for o in r.definition.ops.values() if isinstance(o, ExecOp)]
    last = next(o for o in ops if o.args[-1] == "x")
    first = next(o for o in ops if o.args[-1] == "mk")
    from pybuild.llb import op_digest

    assert last.mounts[0].input.op == op_digest(first)
    assert last.mounts[0].selector == "/out" and not last.mounts[0].readonly


def test_tmpfs_size(fe):
    """testMountTmpfsSize: size=128m."""
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=tmpfs,target=/dev/shm,size=128m x\n")
    assert m.mounts[0].tmpfs_size == 128 * 1024 * 1024


def test_secret_mounts(fe):
    """testSecretFileParams / testSecretAsEnviron / testSecretAsEnvironWithFileMount."""
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=secret,id=mysecret x\n").mounts[0]
    assert (m.target, m.secret.id, m.secret.required, m.secret.mode) == (
        "/run/secrets/mysecret", "mysecret", False, 0o400)
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=secret,target=/a/tok,required x\n"
                  ).mounts[0]
    assert m.secret.id == "tok" and m.secret.required and m.target == "/a/tok"
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=secret,id=t,env=TOKEN x\n").mounts[0]
    assert m.secret.env == "TOKEN" and not m.secret.file
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=secret,id=t,env=TOKEN,target=/t x\n"
                  ).mounts[0]
    assert m.secret.env == "TOKEN" and m.secret.file and m.target == "/t"
    m = last_exec(fe, "FROM busybox\nRUN --mount=type=secret,source=s,mode=0444,uid=1 x\n"
                  ).mounts[0]
    assert (m.secret.id, m.secret.mode, m.secret.uid) == ("s", 0o444, 1)


def test_secret_env_masked_in_description(fe):
    r = fe.compile("FROM busybox\nENV TOKEN=leak\nRUN --mount=type=secret,id=t,env=TOKEN "
                   "echo $TOKEN\n")
    descs = " ".join(m.description for m in r.definition.metadata.values())
    assert "leak" not in descs and "****" in descs


def test_ssh_mounts(fe):
    """testSSHSocketParams: default id, socket path and SSH_AUTH_SOCK."""
    op = last_exec(fe, "FROM busybox\nRUN --mount=type=ssh --mount=type=ssh,id=k,"
                       "target=/s,mode=0700,required x\n")
    a, b = op.mounts
    assert (a.ssh.id, a.target) == ("default", "/run/buildkit/ssh_agent.0")
    assert (b.ssh.id, b.target, b.ssh.mode, b.ssh.required) == ("k", "/s", 0o700, True)
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in op.env


def test_network_and_security(fe):
    """testRunNoNetwork / testRunHostNetwork / testRunSecurityInsecure."""
    op = last_exec(fe, "FROM busybox\nRUN --network=none --security=insecure x\n")
    assert (op.network, op.security) == ("none", "insecure")
    op = last_exec(fe, "FROM busybox\nRUN x\n", network="host")
    assert op.network == "host"
    op = last_exec(fe, "FROM busybox\nRUN --network=default x\n", network="none")
    assert op.network == "none"


def test_device_not_supported(fe):
    with pytest.raises(UserError, match="RUN --device is not supported yet"):
        fe.compile("FROM busybox\nRUN --device=nvidia.com/gpu=all x\n")


def test_mount_required_order(fe):
    """commands_runmount.go: `required` is checked against the type seen so far."""
    with pytest.raises(UserError, match="unexpected key 'required' for mount type 'bind'"):
        fe.compile("FROM busybox\nRUN --mount=required,type=secret,id=x x\n")
    fe.compile("FROM busybox\nRUN --mount=type=secret,id=x,required=false x\n")


def test_no_cache_marks_ops(fe):
    """testNoCache: no-cache filter per stage."""
    r = fe.compile("FROM busybox AS a\nRUN a\nFROM a\nRUN b\n", no_cache_filter=("a",))
    flags = {m.description: m.ignore_cache for m in r.definition.metadata.values()
             if "RUN" in m.description}
    assert flags == {"[a 2/2] RUN a": True, "[stage-1 1/1] RUN b": False}

"""One test per instruction's effect on the image config and its history text
(BEHAVIOURS.md §4, §8-§13)."""

from __future__ import annotations

import pytest

from pybuild.errors import UserError
from pybuild.llb import FileOp, MkdirAction
from pybuild.oci.config import DEFAULT_PATH
from pybuild.oci.platform import Platform


def cfg(fe, df: str, **opts):
    return fe.compile(df, **opts).config


def test_scratch_defaults(fe):
    """testDockerfileScratchConfig: scratch has WorkingDir / and the default PATH."""
    c = cfg(fe, "FROM scratch\n")
    assert c.config.working_dir == "/"
    assert c.config.env == (f"PATH={DEFAULT_PATH}",)
    assert (c.os, c.architecture) == ("linux", "amd64")
    assert c.history == ()
    assert fe.compile("FROM scratch\n").definition.output is None


def test_default_path_added_to_base_without_path(fe):
    """BEHAVIOURS §13: a base image without PATH gets the default PATH."""
    c = cfg(fe, "FROM nopath\n")
    assert c.config.env == ("FOO=1", f"PATH={DEFAULT_PATH}")


def test_base_config_inherited_created_reset(fe):
    """testExportedHistory: base config and history inherited, created reset."""
    c = cfg(fe, "FROM busybox\n")
    assert c.config.cmd == ("sh",)
    assert c.created == ""
    assert [h.created_by for h in c.history] == ["layer 0"]


def test_env(fe):
    """testEnvEmptyFormatting: ENV k=v updates Config.Env; history ENV k=v."""
    c = cfg(fe, 'FROM busybox\nENV A="x y" B=\nENV C d e\n')
    env = c.config.env_dict()
    assert env["A"] == "x y" and env["B"] == "" and env["C"] == "d e"
    hist = [h for h in c.history if h.created_by.startswith("ENV")]
    assert [h.created_by for h in hist] == ["ENV A=x y B=", "ENV C=d e"]
    assert all(h.empty_layer and h.comment == "buildkit.dockerfile.v0" for h in hist)


def test_label_and_frontend_labels(fe):
    """testLabels: LABEL keys/values expanded; --label merged last and wins."""
    c = cfg(fe, 'FROM scratch\nARG V=1\nLABEL "a b"=$V x=y\n', labels=(("x", "cli"),))
    assert dict(c.config.labels) == {"a b": "1", "x": "cli"}
    assert c.history[-1].created_by == "LABEL a b=1 x=y"


def test_maintainer(fe):
    """BEHAVIOURS §4: MAINTAINER sets author; lint MaintainerDeprecated."""
    r = fe.compile("FROM scratch\nMAINTAINER me <me@x>\n")
    assert r.config.author == "me <me@x>"
    assert r.config.history[-1].created_by == "MAINTAINER me <me@x>"
    assert any("MaintainerDeprecated" in w for w in map(str, r.warnings))


def test_workdir_creates_dir_owned_by_user(fe):
    """testWorkdirUser / testWorkdirCreatesDir: mkdir -p 0755 owned by USER, a layer."""
    r = fe.compile("FROM busybox\nUSER daemon\nWORKDIR /app\nWORKDIR sub/../x\n")
    assert r.config.config.working_dir == "/app/x"
    ops = [op for op in r.definition.ops.values() if isinstance(op, FileOp)]
    mk = sorted(a.path for op in ops for a in op.actions if isinstance(a, MkdirAction))
    assert mk == ["/app", "/app/x"]
    assert all(a.chown.user == "daemon" for op in ops for a in op.actions)
    hist = [h for h in r.config.history if h.created_by.startswith("WORKDIR")]
    assert [(h.created_by, h.empty_layer) for h in hist] == [
        ("WORKDIR /app", False), ("WORKDIR /app/x", False)]


def test_workdir_root_creates_nothing(fe):
    """testExportedHistory: WORKDIR / creates nothing; its history is an empty layer."""
    r = fe.compile("FROM busybox\nWORKDIR /\n")
    assert not any(isinstance(op, FileOp) for op in r.definition.ops.values())
    assert (r.config.history[-1].created_by, r.config.history[-1].empty_layer) == (
        "WORKDIR /", True)


def test_base_workdir_not_created(fe):
    """code commit=false: the base image's WorkingDir is applied but not created."""
    r = fe.compile("FROM withuser\nRUN pwd\n")
    op = next(o for o in r.definition.ops.values() if o.kind == "exec")
    assert op.cwd == "/home/app" and op.user == "app"
    assert not any(isinstance(o, FileOp) for o in r.definition.ops.values())


def test_workdir_relative_lint(fe):
    """testWorkdirRelativePath: a relative first WORKDIR is linted."""
    r = fe.compile("FROM busybox\nWORKDIR app\n")
    assert any("WorkdirRelativePath" in w for w in map(str, r.warnings))
    assert r.config.config.working_dir == "/app"


def test_user(fe):
    """testUser: Config.User kept verbatim after expansion; used by RUN, not COPY."""
    r = fe.compile("FROM busybox\nARG U=1000\nUSER ${U}:staff\nRUN id\nCOPY a /a\n")
    assert r.config.config.user == "1000:staff"
    assert r.config.history[-3].created_by == "USER 1000:staff"
    execs = [o for o in r.definition.ops.values() if o.kind == "exec"]
    assert execs[0].user == "1000:staff"
    copies = [a for o in r.definition.ops.values() if isinstance(o, FileOp) for a in o.actions]
    assert copies[0].chown is None


def test_cmd_shell_and_exec(fe):
    """testCmdShell: shell form wrapped in SHELL; ArgsEscaped; history %q."""
    c = cfg(fe, 'FROM scratch\nCMD echo "hi"\n')
    assert c.config.cmd == ("/bin/sh", "-c", 'echo "hi"')
    assert c.config.args_escaped
    assert c.history[-1].created_by == 'CMD ["/bin/sh" "-c" "echo \\"hi\\""]'
    c = cfg(fe, 'FROM scratch\nCMD ["a", "b c"]\n')
    assert c.config.cmd == ("a", "b c")


def test_entrypoint_resets_inherited_cmd(fe):
    """testCmdShell: ENTRYPOINT resets CMD unless CMD was set in the same stage."""
    c = cfg(fe, 'FROM busybox\nSHELL ["ls"]\nENTRYPOINT my entrypoint\n')
    assert c.config.cmd is None
    assert c.config.entrypoint == ("ls", "my entrypoint")
    c = cfg(fe, "FROM busybox\nCMD x\nENTRYPOINT [\"e\"]\n")
    assert c.config.cmd == ("/bin/sh", "-c", "x")
    c = cfg(fe, "FROM busybox AS a\nCMD x\nFROM a\nENTRYPOINT [\"e\"]\n")
    assert c.config.cmd is None


def test_entrypoint_empty_and_invalid_json(fe):
    """testInvalidJSONCommands: ENTRYPOINT [] is empty; []random is shell form."""
    c = cfg(fe, "FROM scratch\nENTRYPOINT []\n")
    assert c.config.entrypoint is None
    assert c.history[-1].created_by == "ENTRYPOINT []"
    c = cfg(fe, "FROM scratch\nENTRYPOINT []random string\n")
    assert c.config.entrypoint == ("/bin/sh", "-c", "[]random string")


def test_shell(fe):
    """BEHAVIOURS §10: SHELL must be JSON; stored in Config.Shell; used by shell forms."""
    r = fe.compile('FROM busybox\nSHELL ["/bin/bash", "-c"]\nRUN echo\nCMD x\n')
    assert r.config.config.shell == ("/bin/bash", "-c")
    assert r.config.config.cmd == ("/bin/bash", "-c", "x")
    assert "SHELL [/bin/bash -c]" in [h.created_by for h in r.config.history]
    with pytest.raises(UserError, match="SHELL requires the arguments to be in JSON form"):
        fe.compile("FROM busybox\nSHELL /bin/bash -c\n")


def test_healthcheck(fe):
    """instructions/parse_test.go: HEALTHCHECK forms, %+v history."""
    c = cfg(fe, "FROM scratch\nHEALTHCHECK --interval=5m --timeout=1.5s --retries=3 "
                "CMD curl -f http://x/\n")
    hc = c.config.healthcheck
    assert hc.test == ("CMD-SHELL", "curl -f http://x/")
    assert (hc.interval, hc.timeout, hc.retries) == (300_000_000_000, 1_500_000_000, 3)
    assert c.history[-1].created_by == (
        "HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:5m0s Timeout:1.5s "
        "StartPeriod:0s StartInterval:0s Retries:3}")
    c = cfg(fe, 'FROM scratch\nHEALTHCHECK --start-interval=10ms CMD ["a", "b"]\n')
    assert c.config.healthcheck.test == ("CMD", "a", "b")
    assert "StartInterval:10ms" in c.history[-1].created_by
    c = cfg(fe, "FROM scratch\nHEALTHCHECK --bogus=1 NONE\n")  # flags ignored for NONE
    assert c.config.healthcheck.test == ("NONE",)


@pytest.mark.parametrize(("line", "message"), [
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK FOO x", 'Unknown type "FOO" in HEALTHCHECK (try CMD)'),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK --interval=1us CMD x", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
    ("HEALTHCHECK --timeout=5 CMD x", "time: missing unit in duration"),
])
def test_healthcheck_errors(fe, line, message):
    with pytest.raises(UserError) as e:
        fe.compile(f"FROM scratch\n{line}\n")
    assert message in e.value.message
    assert e.value.location.start_line == 2


def test_stopsignal(fe):
    """BEHAVIOURS §11: expanded, validated with ParseSignal, stored verbatim."""
    c = cfg(fe, "FROM scratch\nARG S=SIGKILL\nSTOPSIGNAL $S\n")
    assert c.config.stop_signal == "SIGKILL"
    assert c.history[-1].created_by == "STOPSIGNAL SIGKILL"
    for ok in ("term", "9", "RTMIN+3", "SIGRTMAX-1"):
        cfg(fe, f"FROM scratch\nSTOPSIGNAL {ok}\n")
    with pytest.raises(UserError, match="invalid signal: SIGFOO"):
        cfg(fe, "FROM scratch\nSTOPSIGNAL SIGFOO\n")
    cfg(fe, "FROM scratch\nSTOPSIGNAL --x=1 TERM\n")  # flags ignored


def test_expose(fe):
    """testExposeExpansion / convert_expose_test.go: word split, ranges, proto."""
    c = cfg(fe, 'FROM scratch\nARG PORTS="3000 4000/udp"\nEXPOSE $PORTS 80-82/TCP 53/udp\n')
    assert set(c.config.exposed_ports) == {"3000/tcp", "4000/udp", "80/tcp", "81/tcp",
                                           "82/tcp", "53/udp"}
    assert c.history[-1].created_by == (
        "EXPOSE [3000/tcp 4000/udp 53/udp 80/tcp 81/tcp 82/tcp]")
    r = fe.compile("FROM scratch\nEXPOSE 80/TCP\n")
    assert any("ExposeProtoCasing" in w for w in map(str, r.warnings))
    with pytest.raises(UserError, match="invalid proto: foo"):
        cfg(fe, "FROM scratch\nEXPOSE 80/foo\n")
    with pytest.raises(UserError, match="invalid containerPort: 70000"):
        cfg(fe, "FROM scratch\nEXPOSE 70000\n")


def test_volume(fe):
    """BEHAVIOURS §11: VOLUME JSON or words, expanded, added to Config.Volumes."""
    c = cfg(fe, 'FROM scratch\nENV D=/data\nVOLUME ["$D", "/logs"]\nVOLUME /x /y\n')
    assert c.config.volumes == ("/data", "/logs", "/x", "/y")
    assert c.history[-2].created_by == "VOLUME [/data /logs]"
    with pytest.raises(UserError, match="VOLUME specified can not be an empty string"):
        cfg(fe, 'FROM scratch\nVOLUME [""]\n')
    with pytest.raises(UserError, match="VOLUME specified can not be an empty string"):
        cfg(fe, "FROM scratch\nVOLUME $NOTSET\n")


def test_onbuild_stored(fe):
    """BEHAVIOURS §12: ONBUILD stores the trigger text; no history entry."""
    c = cfg(fe, "FROM scratch\nONBUILD RUN echo hi\nonbuild COPY <<EOF /x\nbody\nEOF\n")
    assert c.config.on_build == ("RUN echo hi", "COPY <<EOF /x\nbody\nEOF")
    assert c.history == ()


def test_platform_fields_forced_with_explicit_platform(fe):
    """testMaintainBaseOSVersion: explicit --platform forces os/arch in the result."""
    fe.resolver.images["win"] = fe.resolver.images["busybox"].replace(
        os="windows", os_version="10.0.1")
    c = cfg(fe, "FROM busybox\n", platform=Platform.parse("linux/arm64"))
    assert (c.os, c.architecture) == ("linux", "arm64")
    c = cfg(fe, "FROM win\n", platform=None)
    assert (c.os, c.os_version) == ("windows", "10.0.1")


def test_history_per_instruction(fe):
    """testExportedHistory: one entry per instruction, empty_layer for metadata."""
    r = fe.compile("FROM busybox\nARG a=b\nRUN echo\nCOPY --chmod=644 x /y\nENV z=1\n")
    got = [(h.created_by, h.empty_layer) for h in r.config.history][1:]
    assert got == [("ARG a=b", True), ("RUN |1 a=b /bin/sh -c echo # buildkit", False),
                   ("COPY --chmod=644 x /y # buildkit", False), ("ENV z=1", True)]

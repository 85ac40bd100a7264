"""The sandbox's wire protocol: values, the codec both ends use, failures as typed errors."""

from __future__ import annotations

import errno

import pytest

from pybuild.builder.executor import protocol as p
from pybuild.builder.executor.daemon.server import failure
from pybuild.builder.executor.record import replace
from pybuild.builder.executor.rpc import SandboxError, raise_failure
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, InternalError, UserError

D = Digest.from_bytes(b"layer")

SAMPLES: list[p.Message] = [
    p.Request(id=1, call=p.Ping()),
    p.Request(id=2, call=p.Apply(layer=p.LayerBlob(path="/b", digest=D, size=5, diff_id=D),
                                 dest="/s/x")),
    p.Request(id=3, call=p.Exec(
        step=p.ExecStep(step_dir="/w/s", lowers=("/s/a", "/s/b"), args=("sh", "-c", "é\udcff"),
                        env=("A=1",), user="app:staff", network="host", mounts=(
                            p.BindFromTar(target="/t", tar="/w/t.tar", readonly=False),
                            p.BindFromLowers(target="/l", lowers=("/s/a",), selector="/x"),
                            p.Tmpfs(target="/tmp", size=1 << 20, readonly=True),
                            p.CacheDir(target="/c", dir="/cm/1", sharing="locked",
                                       seed_lowers=("/s/a",), readonly=True),
                            p.SecretFile(target="", data=b"\x00\xff", env="TOKEN"),
                            p.SSHSocket(target="/run/ssh", socket="/w/ssh.sock", uid=1000,
                                        mode=0o660)),
                        commit=p.CommitSpec(out="/w/l", compression="none", mtime=5)),
        runtime="/usr/bin/crun", id_extents=(p.IdExtent(container_id=0, host_id=0, size=1),),
        state_dir="/w/state")),
    p.Request(id=4, call=p.FileOp(step=p.FileStep(step_dir="/w/f", lowers=(), actions=(
        p.MakeDir(path="/d", owner=p.Owner(user="app")),
        p.MakeFile(path="/d/f", data=b"hi", mode=0o600),
        p.CopyFiles(source=p.FromTar(tar="/w/c.tar", direct=True), sources=("/",),
                    dest="/app", dest_is_dir=True),
        p.CopyFiles(source=p.FromLowers(lowers=("/s/a",)), sources=("/x*",), dest="/y",
                    owner=p.Owner(user="1", group="2"), chmod="u+x"))))),
    p.Request(id=5, call=p.Cancel(target=3, grace=1.5)),
    p.Reply(id=3, body=p.Log(data="out\n")),
    p.Reply(id=3, body=p.SnapshotterNotice(name="copy", why="no overlay")),
    p.Reply(id=3, body=p.ExecResult(exit_code=0, runtime="/usr/bin/crun", commit=p.CommitResult(
        diff_id=D, size=10, digest=D, compressed_size=10, media_type="m", empty=False))),
    p.Reply(id=6, body=p.PathProbe(chain=(p.PathEntry(mode=0o40755, uid=0, gid=0, mtime_ns=1,
                                                      xattrs=(("user.a", b"\x01"),)),),
                                   missing=True)),
    p.Reply(id=7, body=p.Failure(user=True, code="no-space", message="m", trace="t")),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(getattr(m, "call", None)
                                                            or m.body).__name__)
def test_every_message_decodes_to_what_was_encoded(msg: p.Message) -> None:
    line = p.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = p.decode(line)
    assert back == msg and hash(back) == hash(msg)


def test_digests_and_bytes_keep_their_types() -> None:
    msg = p.decode(p.encode(SAMPLES[1]))
    assert isinstance(msg, p.Request) and isinstance(msg.call, p.Apply)
    assert type(msg.call.layer.digest) is Digest


@pytest.mark.parametrize("line", [
    b"not json", b'{"id": 1}', b'{"_": "Nope"}', b'{"_": "Ping", "extra": 1}',
    b'{"_": "Request", "id": 1, "call": {"_": "Remove", "paths": [{"$d": "sha256:x"}]}}',
    b'{"_": "Log", "data": "x"}',
])
def test_what_is_not_a_message_is_refused(line: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode(line)


def test_only_protocol_values_encode() -> None:
    with pytest.raises(p.ProtocolError):
        p.encode(p.Request(id=1, call=p.Remove(paths=["a"])))  # type: ignore[arg-type]


def test_values_are_frozen_keyword_only_records() -> None:
    t = p.Tmpfs(target="/t")
    with pytest.raises(AttributeError):
        t.target = "/u"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.Tmpfs()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        p.Tmpfs(target="/t", nope=1)  # type: ignore[call-arg]
    assert replace(t, readonly=True) == p.Tmpfs(target="/t", readonly=True) != t
    assert repr(t) == "Tmpfs(target='/t', size=0, readonly=False)"
    assert p.snapshot_name(str(D)) == D.hex[:24]


def _raised(failure_: p.Failure) -> BaseException:
    with pytest.raises(Exception) as err:
        raise_failure(p.Ping(), failure_)
    return err.value


def test_user_failures_are_one_line_errors_with_the_trace_as_a_note() -> None:
    exc = _raised(p.Failure(user=True, code="integrity", message="layer x lies", trace="TB"))
    assert isinstance(exc, IntegrityError) and exc.message == "layer x lies"
    assert exc.__notes__ == ["in the sandbox daemon:\nTB"]  # shown with --debug
    exc = _raised(p.Failure(user=True, code="no-space", message="full"))
    assert isinstance(exc, SandboxError) and exc.code == "no-space"
    assert exc.hint is not None and "prune" in exc.hint
    exc = _raised(p.Failure(user=False, code="internal", message="KeyError: 'x'", trace="TB"))
    assert isinstance(exc, InternalError) and "\n" not in exc.message


def test_the_daemon_names_the_operation_and_path_of_an_os_error() -> None:
    call = p.Apply(layer=p.LayerBlob(path="/b", digest=D, size=1, diff_id=D), dest="/s/x")
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "/s/x.tmp/f")
    except OSError as exc:
        f = failure(call, exc)
    assert f.user and f.code == "no-space"
    assert f.message == (f"unpacking layer {D} into /s/x failed: No space left on device "
                         "(/s/x.tmp/f)")
    try:
        raise UserError("unable to find user x")
    except UserError as exc:
        f = failure(call, exc)
    assert f.user and f.message == "unable to find user x"
    try:
        raise KeyError("bug")
    except KeyError as exc:
        f = failure(call, exc)
    assert not f.user and "KeyError" in f.message and "Traceback" in f.trace

"""Bytes that are not UTF-8 (issue 9 F11): what current BuildKit does, end to end.

- Its LLB is protobuf and proto3 `string` fields must be UTF-8: an op whose strings carry
  such bytes (a shell-form RUN line, a non-shebang RUN heredoc) fails with
  `failed to marshal LLB definition: string field contains invalid UTF-8`.
- Its parser and lexer read runes: ENV/LABEL values and every expanded word (WORKDIR,
  COPY sources, USER, …) get U+FFFD for each invalid byte; the image config JSON does too.
- File data is bytes: a heredoc script with a shebang, or a COPY of a script, keeps its
  Latin-1 bytes, so such scripts build.
"""

from __future__ import annotations

import json

import pytest

from pybuild.errors import UserError
from pybuild.llb import ExecOp, FileOp, MkdirAction, MkfileAction


@pytest.mark.parametrize("df", [
    b"FROM busybox\nRUN echo caf\xe9\n",
    b"FROM busybox\nRUN <<EOF\necho caf\xe9\nEOF\n",
    b"FROM busybox\nENV X=1\nRUN [\"echo\", \"a\"] \xff\n",
])
def test_run_with_invalid_utf8_is_refused_like_buildkit(fe, df: bytes) -> None:
    with pytest.raises(UserError) as e:
        fe.compile(df)
    assert e.value.message == ("failed to marshal LLB definition: string field contains "
                               "invalid UTF-8")
    loc = e.value.location
    assert loc is not None and loc.instruction == "RUN"
    loc.text.encode()  # printable: the bad byte is shown as U+FFFD


def test_latin1_shebang_heredoc_builds_with_its_bytes(fe) -> None:
    r = fe.compile(b"FROM busybox\nRUN <<EOF\n#!/bin/sh\necho caf\xe9\nEOF\n")
    d = r.definition
    files = [a for x in d.ops.values() if isinstance(x, FileOp) for a in x.actions
             if isinstance(a, MkfileAction)]
    assert files[0].data == b"#!/bin/sh\necho caf\xe9\n"
    [run] = [x for x in d.ops.values() if isinstance(x, ExecOp)]
    assert run.args == ("/bin/sh", "-c", "/dev/pipes/EOF")
    json.dumps(d.to_json()).encode()  # `debug dag` prints it


def test_quoted_copy_heredoc_keeps_bytes(fe) -> None:
    r = fe.compile(b"FROM busybox\nCOPY <<'EOF' /x\ncaf\xe9\nEOF\n")
    [doc] = [a for x in r.definition.ops.values() if isinstance(x, FileOp) for a in x.actions
             if isinstance(a, MkfileAction)]
    assert doc.data == b"caf\xe9\n"


def test_expanded_words_get_replacement_characters(fe) -> None:
    r = fe.compile(b"FROM busybox\nWORKDIR /d\xff\nCOPY f\xff /x\n")
    actions = [a for x in r.definition.ops.values() if isinstance(x, FileOp)
               for a in x.actions]
    assert any(isinstance(a, MkdirAction) and a.path == "/d\ufffd" for a in actions)
    assert r.config.config.working_dir == "/d\ufffd"
    for m in r.definition.metadata.values():
        m.description.encode()


def test_config_values_are_valid_utf8(fe) -> None:
    r = fe.compile(b"FROM busybox\nLABEL a=caf\xe9\nENV B=\xff\nCMD echo \xff\nMAINTAINER \xff\n")
    text = json.dumps(r.config.to_json(), ensure_ascii=False)
    text.encode()
    assert r.config.config.cmd == ("/bin/sh", "-c", "echo \ufffd")
    assert dict(r.config.config.labels)["a"] == "caf\ufffd"
    assert 'CMD ["/bin/sh" "-c" "echo \\xff"]' in [h.created_by for h in r.config.history]

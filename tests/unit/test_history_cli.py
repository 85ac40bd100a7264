"""`pybuild history` commands on records made by a recorder (no build needed)."""

from __future__ import annotations

import json
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pybuild.builder.events import VertexCached, VertexDone, VertexLog, VertexMiss, VertexStarted
from pybuild.cli.main import main
from pybuild.history import BuildRecorder, RequestSummary, store
from tests.unit.test_history_timeline import synthetic


def _run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(root), "history", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _small(root: Path) -> str:
    rec = BuildRecorder(root)
    ref = rec.start(RequestSummary(name="app", context="/src/app", platforms=("linux/amd64",),
                                   build_args=(("FOO", "1"), ("NPM_TOKEN", "t0k3n-value"))))
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    rec(VertexCached(digest=a, name="[1/2] FROM busybox"))
    rec(VertexMiss(digest=b, name="[2/2] RUN make", reason="the step's files changed: x.c"))
    rec(VertexStarted(digest=b, name="[2/2] RUN make"))
    rec(VertexLog(digest=b, name="[2/2] RUN make", data="cc -c x.c\npartial"))
    rec(VertexLog(digest=b, name="[2/2] RUN make", data=" line\n"))
    rec(VertexDone(digest=b, name="[2/2] RUN make", seconds=0.1))
    rec.finish()
    return ref


def test_ls_inspect_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _small(tmp_path)
    code, out, _ = _run(capsys, tmp_path, "ls")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["BUILD", "ID", "NAME", "STATUS", "CREATED", "AT", "DURATION",
                              "CACHED/TOTAL"]
    assert row.startswith(ref) and "Completed" in row and row.endswith("1/2")
    code, out, _ = _run(capsys, tmp_path, "ls", "--format", "json")
    line = json.loads(out)
    assert (line["ref"], line["status"], line["total_steps"], line["cached_steps"]) == \
        (ref, "Completed", 2, 1)
    code, out, _ = _run(capsys, tmp_path, "inspect", "^0")
    assert "Name:" in out and "app" in out and "Build Steps: 2/2 (50% cached)" in out
    assert "the step's files changed: x.c" in out and "NPM_TOKEN" in out
    assert "t0k3n-value" not in out and "(not recorded: secret)" in out
    code, out, _ = _run(capsys, tmp_path, "inspect", ref[:6], "--format", "json")
    assert json.loads(out)["RedactedBuildArgs"] == ["NPM_TOKEN"]
    code, out, _ = _run(capsys, tmp_path, "logs", "--step", "2")
    lines = out.splitlines()
    assert lines[0] == "#2 [2/2] RUN make"
    assert lines[1] == "#2 not cached: the step's files changed: x.c"
    assert lines[2].startswith("#2 ") and lines[2].endswith(" cc -c x.c")
    assert lines[3].endswith(" partial line") and re.fullmatch(r"#2 DONE \d+\.\ds", lines[4])
    code, out, _ = _run(capsys, tmp_path, "logs")
    assert out.startswith("#1 [1/2] FROM busybox\n#1 CACHED\n\n#2 ")
    code, _, err = _run(capsys, tmp_path, "logs", "--step", "9")
    assert code == 1 and "no step #9" in err
    code, _, err = _run(capsys, tmp_path, "inspect", "nope")
    assert code == 1 and 'no record found for ref "nope"' in err


def test_export_import_rm_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    ref = _small(src)
    archive = tmp_path / "records.tar.gz"
    code, _, err = _run(capsys, src, "export", ref, "-o", str(archive))
    assert code == 0 and "exported 1 build record" in err
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(["pybuild-history.json", f"{ref}/header.json",
                            f"{ref}/events.jsonl", f"{ref}/final.json",
                            f"{ref}/timeline.html"])
    code, out, _ = _run(capsys, dst, "import", "-f", str(archive))
    assert code == 0 and out.strip() == ref
    assert store.load(store.resolve(dst, ref)) == store.load(store.resolve(src, ref))
    svg = tmp_path / "t.svg"
    code, _, err = _run(capsys, dst, "trace", ref, "-o", str(svg))
    assert code == 0 and ET.parse(svg).getroot().tag.endswith("svg")
    page = tmp_path / "t.html"
    assert _run(capsys, dst, "trace", "-o", str(page))[0] == 0
    assert page.read_text().startswith("<!DOCTYPE html>")
    code, out, _ = _run(capsys, dst, "rm", ref)
    assert code == 0 and out.strip() == ref and store.heads(dst) == []
    code, _, err = _run(capsys, dst, "rm")
    assert code == 1 and "--all or at least one REF" in err


def test_import_refuses_hostile_archives(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import io

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        data = json.dumps({"format": "pybuild-history", "version": 1}).encode()
        info = tarfile.TarInfo("pybuild-history.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../../etc/evil")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    code, _, err = _run(capsys, tmp_path / "r", "import", "-f", str(bad))
    assert code == 1 and "unexpected member '../../etc/evil'" in err
    assert not (tmp_path / "etc").exists()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    code, _, err = _run(capsys, tmp_path / "r", "import", "-f", str(junk))
    assert code == 1 and "not a" in err


def test_ls_of_many(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic(tmp_path, 40)
    code, out, _ = _run(capsys, tmp_path, "ls")
    assert code == 0 and "synthetic" in out
    code, out, err = _run(capsys, tmp_path, "open")
    assert code == 0, err
    assert out.strip().endswith("timeline.html") or out.startswith("opened ")

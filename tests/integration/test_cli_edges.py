"""F15 (faults-found.md): every command-line edge of the fault drills, as a table. Each
line that once gave `internal error` (exit 2), read a device until MemoryError, or was
accepted silently now exits 1 with one error line (and at most a hint) naming the
path, flag or name at fault; the lines that were fine stay fine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import PybuildRunner, run_pybuild

LONG_NAME = "a" * 300  # distribution/reference: at most 255 characters of repository path


def _ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=secret,id=s true\n")
    return ctx


# (id, arguments after `build`, what the error names); `{tmp}` is the test's tmp dir.
REFUSED = [
    ("max-parallelism", ["--max-parallelism", "-1"], "--max-parallelism -1"),
    ("iidfile-missing-dir", ["--iidfile", "{tmp}/missing/x"], "{tmp}/missing/x"),
    ("metadata-file-proc", ["--metadata-file", "/proc/x"], "/proc/x"),
    ("cache-to-proc", ["--cache-to", "type=local,dest=/proc/x"], "/proc/x"),
    ("oci-dest-proc", ["-o", "type=oci,dest=/proc/x"], "/proc/x"),
    ("docker-dest-missing-dir", ["-o", "type=docker,dest={tmp}/missing/x.tar"],
     "{tmp}/missing"),
    ("secret-char-device", ["--secret", "id=s,src=/dev/zero"], "/dev/zero"),
    ("dockerfile-char-device", ["-f", "/dev/zero"], "/dev/zero"),
    ("dockerfile-fifo", ["-f", "{tmp}/fifo"], "{tmp}/fifo"),
    ("tag-too-long", ["-t", LONG_NAME], "must not be more than 255 characters"),
    ("tag-part-too-long", ["-t", "app:" + "t" * 129], "bad tag"),
    ("ssh-char-device", ["--ssh", "default=/dev/zero"], "/dev/zero"),
]


@pytest.mark.parametrize(("args", "names"), [(a, n) for _, a, n in REFUSED],
                         ids=[i for i, _, _ in REFUSED])
def test_refused_with_one_line(pybuild: PybuildRunner, tmp_path: Path, args: list[str],
                               names: str) -> None:
    ctx = _ctx(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    r = pybuild("build", *[a.replace("{tmp}", str(tmp_path)) for a in args], str(ctx))
    assert r.code == 1, (r.code, r.err)
    errors = [line for line in r.err.splitlines() if line.startswith(("error:", "pybuild:"))]
    assert len(errors) == 1, r.err
    assert errors[0].startswith("error:") and names.replace("{tmp}", str(tmp_path)) in errors[0]
    assert "internal error" not in r.err and "Traceback" not in r.err
    hint_and_error = r.err[r.err.index("error:"):].strip().splitlines()
    assert len(hint_and_error) <= 2, r.err  # the error line, and a hint at most
    assert not (tmp_path / "missing").exists()  # nothing made on the way


def test_root_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "afile"
    root.write_text("")
    r = run_pybuild(root, "build", str(_ctx(tmp_path)))
    assert r.code == 1
    assert r.err.startswith(f"error: the pybuild root {root} is not a directory")
    assert "internal error" not in r.err


def test_debug_ast_of_a_device(pybuild: PybuildRunner) -> None:
    r = pybuild("debug", "ast", "/dev/zero")
    assert r.code == 1
    assert r.err.startswith("error: Dockerfile /dev/zero is not a regular file")


def test_secret_from_a_pipe_is_read_once(pybuild: PybuildRunner, tmp_path: Path) -> None:
    """`--secret id=s,src=<(cmd)`: a pipe is read at the start (process substitution is a
    common way to pass one), not refused as a device is."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN --mount=type=secret,id=s test \"$(cat /run/secrets/s)\" = piped\n"
        "RUN --mount=type=secret,id=s test \"$(cat /run/secrets/s)\" = piped\n")
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    import threading

    def feed() -> None:
        with open(fifo, "w") as f:
            f.write("piped")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        r = pybuild("build", "--no-cache", "--secret", f"id=s,src={fifo}", str(ctx))
    finally:
        if writer.is_alive():  # the build failed before opening it: let the writer go
            with open(fifo, "rb") as f:
                f.read()
        writer.join()
    assert r.code == 0, r.err


def test_secret_too_big(pybuild: PybuildRunner, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (500 * 1024 + 1))
    r = pybuild("build", "--secret", f"id=s,src={big}", str(_ctx(tmp_path)))
    assert r.code == 1
    assert f"--secret id=s: {big} is too big for a secret" in r.err


@pytest.mark.parametrize("args", [
    ["-t", "a" * 247],  # 255 with library/
    ["-t", "app:" + "t" * 128],
], ids=["name-255", "tag-128"])
def test_longest_names_are_fine(pybuild: PybuildRunner, tmp_path: Path,
                                args: list[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\n")
    r = pybuild("build", *args, str(ctx))
    assert r.code == 0, r.err
    pybuild("rmi", args[1])

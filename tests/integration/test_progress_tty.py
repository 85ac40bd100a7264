"""`--progress` as a user sees it: the real CLI on a pseudo-terminal (120x40).

On a terminal `auto` (and `tty`) is the live view: a header `[+] Building 1.2s (5/5)`, one
line per step with its timer and CACHED / ERROR / CANCELED marks, why a step was not
cached and the tail of its output while it runs; the last frame stays as the summary
(FINISHED / ERROR / CANCELED). A failed step's whole output follows the view, with its
exit code and Dockerfile line. Without a terminal `auto` is plain numbered lines.

The output is read from the pty's master until the process exits. The live view redraws
itself with cursor movements, so the text (ANSI sequences stripped) holds every frame in
turn: the final frame is the last one before rich shows the cursor again."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import REPO, run_pybuild

COLUMNS, ROWS = 120, 40
SHOW_CURSOR = b"\x1b[?25h"  # what rich's Live.stop() writes (start() hid it: \x1b[?25l)
HIDE_CURSOR = b"\x1b[?25l"
ANSI = re.compile(r"\x1b\[[0-9;?<=>]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
HEADER = "[+] Building "


def strip_ansi(text: str) -> str:
    """The text without escape sequences; a carriage return (the view going back to
    redraw) starts a new line, so that a frame never runs on from the previous one."""
    return ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class TtyRun:
    code: int
    raw: bytes  # everything written to the terminal
    interrupted_for: float = 0.0  # seconds from the SIGINT to the exit, if one was sent

    @property
    def text(self) -> str:
        return strip_ansi(self.raw.decode(errors="replace"))

    @property
    def view(self) -> str:
        """What the live view drew (all frames), up to where it was stopped."""
        head, sep, _ = self.raw.rpartition(SHOW_CURSOR)
        assert sep, f"the live view was never stopped (no show-cursor):\n{self.text}"
        return strip_ansi(head.decode(errors="replace"))

    @property
    def final_frame(self) -> list[str]:
        """The last frame of the live view (the summary), one string per terminal line."""
        view = self.view
        assert HEADER in view, f"no live view header in:\n{self.text}"
        frame = view[view.rindex(HEADER):]
        return [line.rstrip() for line in frame.splitlines() if line.strip()]

    @property
    def after(self) -> str:
        """What was printed after the view ended (error report, `built ...`)."""
        return strip_ansi(self.raw.rpartition(SHOW_CURSOR)[2].decode(errors="replace"))


def run_in_tty(root: Path, *args: str, interrupt_when: Callable[[bytes], bool] | None = None,
               timeout: float = 300) -> TtyRun:
    """Run `pybuild --root ROOT ARGS` with stdin, stdout and stderr on a new pty; with
    `interrupt_when`, send SIGINT to its process group (what Ctrl-C does) as soon as the
    output so far satisfies it."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = dict(os.environ)
    for name in ("PYBUILD_ROOT", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR",
                 "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CI"):
        env.pop(name, None)
    env.update(TERM="xterm-256color", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pybuild", "--root", str(root), *args]
    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                                env=env, start_new_session=True)
    finally:
        os.close(slave)
    raw = b""
    deadline = time.monotonic() + timeout
    interrupted_at = 0.0
    try:
        while True:
            if interrupt_when is not None and not interrupted_at and interrupt_when(raw):
                os.killpg(proc.pid, signal.SIGINT)
                interrupted_at = time.monotonic()
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last holder of the terminal closed it
                    data = b""
                if data:
                    raw += data
                    continue
                break
            if proc.poll() is not None:
                break  # exited and nothing left to read (a straggler may hold the pty)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(f"pybuild did not exit within {timeout}s; output:\n"
                                     + strip_ansi(raw.decode(errors="replace")))
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    seconds = time.monotonic() - interrupted_at if interrupted_at else 0.0
    return TtyRun(code, raw, seconds)


def step_line(frame: list[str], name: str) -> str:
    """The one line of the step whose name starts with `name` (`[base 2/2] RUN echo`)."""
    lines = [x for x in frame if re.match(r" => (?:[A-Z]+ )?" + re.escape(name), x)]
    assert len(lines) == 1, f"expected one line for step {name!r} in:\n" + "\n".join(frame)
    return lines[0]


def assert_live_view(run: TtyRun) -> None:
    """A rich live view, not plain progress lines: the cursor hidden then shown, frames
    redrawn in place, no `#N ...` lines."""
    assert HIDE_CURSOR in run.raw and SHOW_CURSOR in run.raw, run.text
    assert b"\x1b[1A" in run.raw, "the view never redrew itself in place"
    assert not re.search(r"(?m)^#\d+ ", run.text), f"plain lines on a terminal:\n{run.text}"


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text


# -- the live view -------------------------------------------------------------------------


def test_auto_on_a_terminal_is_the_live_view_and_a_rebuild_shows_cached_steps(
        shared_root: Path, trav: Path) -> None:
    marker = uuid.uuid4().hex[:12]
    ctx = trav / "ctx"
    ctx.mkdir()
    ctx.chmod(0o755)
    (ctx / "data.txt").write_text("one\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox:latest AS base\n"
        f"RUN echo {marker} > /marker\n"
        "FROM base AS final\n"
        "COPY data.txt /data.txt\n"
        "RUN cat /data.txt /marker\n")
    steps = [f"[base 2/2] RUN echo {marker} > /marker", "[final 1/2] COPY data.txt /data.txt",
             "[final 2/2] RUN cat /data.txt /marker"]

    first = run_in_tty(shared_root, "build", "--progress=auto", "-t", f"tty-{marker}:1",
                       str(ctx))
    assert first.code == 0, first.text
    assert_live_view(first)
    assert_no_traceback(first.text)
    frame = first.final_frame
    n = len([x for x in frame if x.startswith(" => ")])
    assert frame[0].startswith(HEADER) and frame[0].endswith(f"({n}/{n}) FINISHED"), frame
    step_line(frame, "[base 1/2] FROM docker.io/library/busybox:latest")
    for name in steps:
        line = step_line(frame, name)
        assert "CACHED" not in line and "ERROR" not in line, line
        assert re.search(r" \d+\.\ds$", line), f"no timer on: {line!r}"
    # Each step is drawn as it starts, with why it was not cached.
    assert re.search(r"(?m)^ {4}not cached: first build of this step *$", first.view)
    assert f"built tty-{marker}:1 sha256:" in first.after

    (ctx / "data.txt").write_text("two\n")
    second = run_in_tty(shared_root, "build", "--progress=tty", "-t", f"tty-{marker}:2",
                        str(ctx))
    assert second.code == 0, second.text
    assert_live_view(second)
    assert_no_traceback(second.text)
    frame = second.final_frame
    assert frame[0].endswith(f"({n}/{n}) FINISHED"), frame
    assert re.search(r" => CACHED \[base 2/2\] RUN echo " + marker + r" > /marker +0\.0s$",
                     step_line(frame, steps[0])), frame
    for name in steps[1:]:
        line = step_line(frame, name)
        assert "CACHED" not in line, line
        assert re.search(r" \d+\.\ds$", line), line
    # The miss, with its reason, while the COPY ran.
    assert re.search(r"(?m)^ +not cached: context files changed: data\.txt", second.view), \
        second.view


def test_failing_step_shows_its_whole_output_and_the_dockerfile_line(
        shared_root: Path, trav: Path) -> None:
    marker = uuid.uuid4().hex[:12]
    ctx = trav / "ctx"
    ctx.mkdir()
    ctx.chmod(0o755)
    run_line = (f'RUN echo {marker}; for i in $(seq 1 50); do echo "out-line-$i"; done; '
                "exit 3")
    (ctx / "Dockerfile").write_text(f"FROM busybox:latest\nRUN true\n{run_line}\n")

    r = run_in_tty(shared_root, "build", "--progress=tty", str(ctx))
    assert r.code != 0, r.text
    assert_live_view(r)
    assert_no_traceback(r.text)

    frame = r.final_frame
    assert frame[0].startswith(HEADER) and frame[0].endswith(" ERROR"), frame
    line = step_line(frame, "[3/3] " + run_line)
    assert line.startswith(" => ERROR [3/3] RUN echo"), line
    assert re.search(r" \d+\.\ds$", line), line
    # Under it, the tail of its output.
    tail = frame[frame.index(line) + 1:]
    assert tail == [f"    out-line-{i}" for i in range(45, 51)], frame

    # After the view: the error with the file:line and instruction, the exit code, and
    # all 50 lines (the view showed only a tail), each whole and in order.
    after = r.after
    assert re.search(r"error: \S*Dockerfile:3: RUN: .*exit code: 3", after), after
    assert run_line in after, after
    out_lines = [x.strip() for x in after.splitlines() if x.strip().startswith("out-line-")]
    assert out_lines == [f"out-line-{i}" for i in range(1, 51)], after
    assert marker in after


def test_auto_without_a_terminal_prints_plain_lines(shared_root: Path, trav: Path) -> None:
    marker = uuid.uuid4().hex[:12]
    ctx = trav / "ctx"
    ctx.mkdir()
    ctx.chmod(0o755)
    (ctx / "Dockerfile").write_text(f"FROM busybox:latest\nRUN echo {marker}\n")
    r = run_pybuild(shared_root, "build", "--progress=auto", str(ctx),
                    env={"TERM": "xterm-256color"})
    assert r.code == 0, r.err
    assert "\x1b" not in r.err and "\x1b" not in r.out, repr(r.err)
    lines = r.err.splitlines()
    assert "#1 [1/2] FROM docker.io/library/busybox:latest" in r.err
    assert "#1 CACHED" in lines
    assert f"#2 [2/2] RUN echo {marker}" in lines
    assert "#2 not cached: first build of this step" in lines
    assert any(re.fullmatch(r"#2 \d+\.\d{3} " + marker, x) for x in lines), r.err
    assert any(re.fullmatch(r"#2 DONE \d+\.\ds", x) for x in lines), r.err
    assert_no_traceback(r.err)


def test_ctrl_c_stops_the_build_and_gives_the_terminal_back(
        shared_root: Path, trav: Path) -> None:
    marker = uuid.uuid4().hex[:12]
    ctx = trav / "ctx"
    ctx.mkdir()
    ctx.chmod(0o755)
    # The step's output (not its name, which the view shows at once) says it is running.
    (ctx / "Dockerfile").write_text(
        f"FROM busybox:latest\nRUN echo running-$((6*7))-{marker}; sleep 30\n")
    running = f"running-42-{marker}".encode()

    r = run_in_tty(shared_root, "build", "--progress=tty", str(ctx),
                   interrupt_when=lambda out: running in out, timeout=120)
    assert r.interrupted_for, "the step never printed its marker: " + r.text
    assert r.interrupted_for < 20, f"pybuild took {r.interrupted_for:.1f}s to stop"
    assert r.code == 130, r.text
    assert_no_traceback(r.text)
    assert "pybuild: interrupted" in r.after, r.after

    # The view was stopped cleanly: its final frame drawn, then the cursor shown again.
    assert r.raw.rindex(SHOW_CURSOR) > r.raw.rindex(HIDE_CURSOR)
    frame = r.final_frame
    assert frame[0].startswith(HEADER) and frame[0].endswith(" CANCELED"), frame
    line = step_line(frame, f"[2/2] RUN echo running-$((6*7))-{marker}; sleep 30")
    assert line.startswith(" => CANCELED "), line

    # The step's processes are gone, not left running behind the build.
    deadline = time.monotonic() + 15
    while True:
        left = subprocess.run(["pgrep", "-f", f"running-.*-{marker}"], capture_output=True,
                              text=True).stdout.strip()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == "", f"processes of the interrupted step are still running: {left}"

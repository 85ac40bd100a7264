"""Reading `.dockerignore` files, with BuildKit's rules for which file applies.

- `read_ignore_file` is moby/patternmatcher `ignorefile.ReadAll`.
- `read_ignore`: the Dockerfile's own `<Dockerfile>.dockerignore` wins over the
  context's `.dockerignore` (BuildKit's dockerui, since Dockerfile 1.4); a named context
  (`--build-context name=DIR`) reads only its own `DIR/.dockerignore`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pybuild.context.patterns import BOM, DockerignoreError
from pybuild.errors import UserError
from pybuild.gocompat import clean_path, trim_space

__all__ = ["IgnoreFile", "read_ignore", "read_ignore_file"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoreFile:
    patterns: tuple[str, ...] = ()
    name: str = ".dockerignore"  # the file's name, for messages ("excluded by …")


def read_ignore_file(text: str) -> list[str]:
    """Parse `.dockerignore` text the way `ignorefile.ReadAll` does.

    A BOM on the first line is dropped, lines starting with `#` are comments,
    lines are trimmed and empty ones skipped, `!` marks an exception, and each
    pattern is `filepath.Clean`ed with one leading `/` removed. A `!` with no
    pattern is rejected here (BuildKit rejects it when building the matcher).
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline does not start another line
    patterns: list[str] = []
    for index, raw in enumerate(lines):
        line = raw[:-1] if raw.endswith("\r") else raw
        if index == 0 and line.startswith(BOM):
            line = line[1:]
        if line.startswith("#"):
            continue
        pattern = trim_space(line)
        if not pattern:
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = trim_space(pattern[1:])
            if not pattern:
                raise DockerignoreError('illegal exclusion pattern: "!"')
        pattern = clean_path(pattern)
        if len(pattern) > 1 and pattern[0] == "/":
            pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    # Bytes as they are (Go strings): a pattern matches the same bytes in a file name.
    return data.decode("utf-8", "surrogateescape")


def read_ignore(context: str, dockerfile: str | None = None) -> IgnoreFile:
    """The ignore patterns for `context`: `<dockerfile>.dockerignore` if there is one,
    else `<context>/.dockerignore`, else none."""
    candidates = [os.path.join(context, ".dockerignore")]
    if dockerfile:
        candidates.insert(0, dockerfile + ".dockerignore")
    for path in candidates:
        text = _read(path)
        if text is not None:
            return IgnoreFile(patterns=tuple(read_ignore_file(text)),
                              name=os.path.basename(path))
    return IgnoreFile()

""".dockerignore reading and matching: now `pybuild.context.patterns` and
`pybuild.context.dockerignore`."""

# moved to pybuild/context/patterns.py and pybuild/context/dockerignore.py; the lead
# removes this shim
from __future__ import annotations

from pybuild.context.dockerignore import read_ignore_file
from pybuild.context.patterns import DockerignoreError, PatternMatcher

__all__ = ["DockerignoreError", "PatternMatcher", "read_ignore_file"]

"""Temporary re-export: the Go-compat helpers now live in `pybuild.frontend.gocompat`.

Kept only for `frontend/dockerignore.py` and its tests, which another change moves to
`pybuild/context/`; the lead removes this module once nothing imports it.
"""

from __future__ import annotations

from pybuild.frontend.gocompat import clean_path, dir_path, quote, trim_space

__all__ = ["clean_path", "dir_path", "quote", "trim_space"]

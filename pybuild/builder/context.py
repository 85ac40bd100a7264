"""The build context: now `pybuild.context` (tree, statcache, patterns)."""

# moved to pybuild/context/tree.py and pybuild/context/statcache.py; the lead removes
# this shim
from __future__ import annotations

from pybuild.context.statcache import StatCache
from pybuild.context.tree import BuildContext, ContextEntry, below, owned_by_root

__all__ = ["BuildContext", "ContextEntry", "StatCache", "below", "owned_by_root"]

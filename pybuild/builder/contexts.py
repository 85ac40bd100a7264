"""The local files a build reads: its context, named contexts (`--build-context
name=DIR`), and what ADD fetched (a URL, a git checkout), each a `BuildContext` that an
op's inputs name through a `local://` (or fetched) source."""

from __future__ import annotations

import os

from pybuild.context.dockerignore import read_ignore
from pybuild.context.patterns import PatternMatcher
from pybuild.context.statcache import StatCache
from pybuild.context.tree import BuildContext, ContextEntry
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.llb import CopyAction, Op, SourceOp

CONTEXT_SOURCE = "local://context"


class Contexts:
    """`main`: the build's context (None: a build without one); `ops`: the op table the
    inputs refer to."""

    def __init__(self, main: BuildContext | None, ops: dict[Digest, Op]) -> None:
        self.main = main
        self.ops = ops
        self._named: dict[Digest, BuildContext] = {}
        self._fetched: dict[Digest, BuildContext] = {}

    @property
    def stat_cache(self) -> StatCache:
        return self.main.stat_cache if self.main is not None else StatCache(None)

    def add_fetched(self, op: Digest, root: str) -> None:
        """What an ADD source fetched, read like a context from now on."""
        self._fetched[op] = BuildContext(root, None, self.stat_cache)

    def is_local(self, op: Digest) -> bool:
        source = self.ops[op]
        return isinstance(source, SourceOp) and source.identifier.startswith("local://")

    def of(self, op: Digest) -> BuildContext | None:
        """The BuildContext the output of `op` is, or None when it is no local files."""
        if op in self._fetched:
            return self._fetched[op]
        source = self.ops[op]
        if not isinstance(source, SourceOp) or not source.identifier.startswith("local://"):
            return None
        if source.identifier == CONTEXT_SOURCE:
            if self.main is None:
                raise UserError("this build has no context directory")
            return self.main
        ctx = self._named.get(op)
        if ctx is None:
            ctx = self._named[op] = self._named_context(source)
        return ctx

    def _named_context(self, op: SourceOp) -> BuildContext:
        """A named local context, with its own .dockerignore, as BuildKit's have."""
        name = op.identifier.removeprefix("local://")
        path = dict(op.attrs).get("path", "")
        if not path:
            raise UserError(f"named context {name}: no directory given")
        root = os.path.abspath(path)
        if not os.path.isdir(root):
            raise UserError(f"named context {name}: {path} is not a directory")
        try:
            ignore = read_ignore(root)
        except OSError as exc:
            raise UserError(f"named context {name}: cannot read .dockerignore: "
                            f"{exc.strerror}") from None
        return BuildContext(root, PatternMatcher(list(ignore.patterns))
                            if ignore.patterns else None, self.stat_cache,
                            ignore_file=f"{name}/.dockerignore")


def select(ctx: BuildContext, action: CopyAction) -> list[ContextEntry]:
    """The context files a COPY/ADD takes (`--exclude` and .dockerignore applied)."""
    if action.include_patterns or action.required_paths:
        entries = ctx.select_parents(action.sources, action.include_patterns,
                                     action.required_paths, action.exclude)
    else:
        entries = ctx.select(action.sources, action.exclude)
    for e in entries:
        if e.rel.rpartition("/")[2].startswith(".wh."):
            # A layer cannot hold such a file: every reader takes it for a whiteout.
            raise UserError(
                f"{e.rel}: a file named .wh.* cannot be copied into an image (OCI "
                "layers use that name to mark deleted files)",
                code="copy-whiteout-name",
                hint="rename it, or leave it out with .dockerignore or --exclude")
    return entries


def file_digests(ctx: BuildContext, entries: list[ContextEntry]) -> dict[str, str]:
    return {e.rel: ctx.digest([e]) for e in entries}


def write_context_tar(ctx: BuildContext, entries: list[ContextEntry], path: str,
                      strip_prefix: str = "") -> None:
    with open(path, "wb") as f:
        ctx.write_tar(entries, f, strip_prefix)

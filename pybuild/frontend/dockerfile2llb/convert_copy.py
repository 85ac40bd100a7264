"""COPY and ADD (BuildKit's `convert_copy.go`)."""

from __future__ import annotations

import dataclasses
import posixpath

from pybuild.frontend.dockerfile2llb.convert_runmount import context_input, scratch_input
from pybuild.frontend.dockerfile2llb.history import commit, display, internal_meta, op_meta
from pybuild.frontend.dockerfile2llb.sources import (
    git_source,
    http_source,
    is_git,
    is_http,
    parse_git_ref,
    url_filename,
)
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState, fail
from pybuild.frontend.dockerfile2llb.validations import (
    expand_reported,
    has_wildcards,
    validate_chmod,
    validate_copy_source,
    validate_digest,
)
from pybuild.frontend.instructions import types as ins
from pybuild.frontend.shell.lex import ShellLex
from pybuild.gocompat import clean_path, to_bytes
from pybuild.llb import Chown, CopyAction, FileOp, Input, MergeOp, MkfileAction


def dest_path(workdir: str, dest: str) -> tuple[str, bool]:
    """pathRelativeToWorkingDir: (clean absolute dest, whether a trailing slash was kept)."""
    keep_slash = dest.endswith("/") or dest.endswith("/.") or dest in ("", ".")
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest or ".")
    return clean_path(dest), keep_slash


def chown_of(text: str) -> Chown:
    """`user[:group]` as written (names are resolved by the executor, in the stage).
    `user:` (an empty group) is group 0, as BuildKit's llb.WithUser marshals it."""
    user, sep, group = text.partition(":")
    return Chown(user=user, group=group or ("0" if sep else ""))


def dispatch_copy(ctx: DispatchContext, d: DispatchState, inst: ins.CopyInstruction,
                  sources: list[DispatchState | None]) -> None:
    """dispatchCopy: COPY and ADD, one FileOp with a copy action per source."""
    loc = inst.loc
    env = d.env.copy()
    chown_text = expand_reported(ctx, d, inst, inst.chown, env) if inst.chown else ""
    chmod = expand_reported(ctx, d, inst, inst.chmod, env) if inst.chmod else ""
    checksum = expand_reported(ctx, d, inst, inst.checksum, env) if inst.checksum else ""
    srcs = [expand_reported(ctx, d, inst, s, env) for s in inst.sources]
    dest_raw = expand_reported(ctx, d, inst, inst.dest, env)
    contents = []
    heredoc_lex = ShellLex("\\", skip_process_quotes=True)  # ExpandRaw: `\` always escapes
    for c in inst.contents:
        data = expand_reported(ctx, d, inst, c.data, env, heredoc_lex) if c.expand else c.data
        contents.append((c.path, data))

    source: Input | None
    from_context = True
    if sources and sources[0] is not None:
        st = sources[0]
        if not st.dispatched:
            raise fail(loc, f'cannot copy from stage "{inst.from_}", it needs to be '
                             f'defined before current stage "{d.stage_name}"',
                             hint="move the stage you copy from above this one")
        source = st.state
        from_context = False
    else:
        source = context_input(ctx)

    dest, dest_is_dir = dest_path(d.dir, dest_raw)
    if chmod:
        validate_chmod(loc, chmod)
    if checksum:
        if not inst.is_add:
            raise fail(loc, "checksum can't be specified for COPY")
        if len(srcs) != 1:
            raise fail(loc, "checksum can't be specified for multiple sources")
        if not is_http(srcs[0]) and not is_git(srcs[0]):
            raise fail(loc, "checksum requires HTTP(S) or Git sources")
    chown = chown_of(chown_text) if chown_text else None
    history = "ADD" if inst.is_add else "COPY"
    if inst.parents:
        history += " --parents"
    if chown_text:
        history += f" --chown={chown_text}"
    if chmod:
        history += f" --chmod={chmod}"
    link = inst.link and not chmod
    # One label for the whole instruction, its remote sources included (BuildKit computes
    # `pgName` once): an ADD of a URL is one step, not two.
    meta = op_meta(ctx, d, loc, display(ctx, loc, env), env=env)
    actions: list[CopyAction] = []
    for src in srcs:
        history += " " + src
        git = parse_git_ref(src)
        if git is not None:
            if not inst.is_add:
                raise fail(loc, "source can't be a git ref for COPY",
                                 hint="use ADD for git sources")
            keep = git.get("keep-git-dir")
            if inst.keep_git_dir is not None and keep is not None and \
                    inst.keep_git_dir != keep:
                raise fail(loc, "inconsistent keep-git-dir configuration")
            ref_sum = git.get("checksum")
            if checksum and ref_sum and checksum != ref_sum:
                raise fail(loc, f'checksum mismatch "{checksum}" != "{ref_sum}"')
            keep_git = bool(keep if keep is not None else inst.keep_git_dir)
            actions.append(CopyAction(
                source=git_source(ctx, meta, loc, src, git, keep_git,
                                        str(checksum or ref_sum or "")),
                sources=("/",), dest=dest, chown=chown, chmod=chmod,
                allow_wildcard=False, allow_empty_wildcard=False,
                exclude=tuple(inst.exclude), dest_is_dir=True, link=link))
            continue
        if is_http(src):
            if not inst.is_add:
                raise fail(loc, "source can't be a URL for COPY",
                                 hint="use ADD for URLs")
            if checksum:
                validate_digest(loc, checksum)
            filename = url_filename(src)
            actions.append(CopyAction(
                source=http_source(ctx, meta, src, filename, checksum),
                sources=("/" + filename,), dest=dest, chown=chown, chmod=chmod,
                allow_wildcard=False, allow_empty_wildcard=False,
                exclude=tuple(inst.exclude), dest_is_dir=dest_is_dir,
                unpack=inst.unpack is True, link=link))
            continue
        if from_context:
            validate_copy_source(ctx, inst, src)
        include: tuple[str, ...] = ()
        required: tuple[str, ...] = ()
        path = src
        if inst.parents:
            parent, sep, pattern = src.partition("/./")
            if not sep:
                pattern, parent = src, "/"
            pattern = clean_path(posixpath.join("/", pattern))
            include = (pattern.removeprefix("/"),)
            if not has_wildcards(parent) and not has_wildcards(pattern):
                required = (clean_path(posixpath.join("/", parent, pattern.lstrip("/"))),)
            path = parent
        path = clean_path(posixpath.join("/", path))
        unpack = inst.is_add if inst.unpack is None else inst.unpack
        if source is None:
            source = scratch_input(ctx)
        actions.append(CopyAction(
            source=source, sources=(path,), dest=dest, chown=chown, chmod=chmod,
            parents=inst.parents, exclude=tuple(inst.exclude), from_context=from_context,
            dest_is_dir=dest_is_dir, unpack=unpack, include_patterns=include,
            required_paths=required, link=link))
    for name, data in contents:
        history += " <<" + name
        doc = ctx.add(FileOp(base=None, actions=(
            MkfileAction(path=clean_path("/" + name), data=to_bytes(data), mode=0o644),)),
            internal_meta("[internal] preparing inline document", d.platform))
        actions.append(CopyAction(
            source=doc, sources=(clean_path("/" + name),), dest=dest, chown=chown, chmod=chmod,
            allow_wildcard=False, allow_empty_wildcard=False, follow_symlinks=False,
            exclude=tuple(inst.exclude), from_context=False, dest_is_dir=dest_is_dir,
            link=link))
    history += " " + dest_raw
    if link:
        # BuildKit's --link: the copy is made on scratch and merged onto the stage, so its
        # layer (and its cache key) never depend on what is below it.
        copied = ctx.add(FileOp(base=None, actions=tuple(actions)), meta)
        d.state = copied if d.state is None else ctx.add(
            MergeOp(sources=(d.state, copied)), dataclasses.replace(meta, description=""))
    else:
        d.state = ctx.add(FileOp(base=d.state, actions=tuple(actions)), meta)
    commit(ctx, d, history, layer=True, buildkit=True)

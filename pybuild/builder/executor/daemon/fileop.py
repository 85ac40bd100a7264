"""A FileOp in the sandbox: file actions (copy, mkdir, mkfile) on the step's overlay.

A copy reads from a tar of build-context files (prepared by pybuild, extracted to a
staging dir) or from the snapshots of a stage or image (an overlay mounted read-only).
"""

from __future__ import annotations

import os

from pybuild.builder.executor.daemon.cleanup import Teardown, quiet_umount
from pybuild.builder.executor.daemon.rootfs import mounted_root
from pybuild.builder.executor.fileops import apply_action, make_dirs
from pybuild.builder.executor.protocol import (
    CopyFiles,
    FileAction,
    FileOp,
    FileOpResult,
    FromLowers,
    FromTar,
)
from pybuild.builder.executor.users import resolve_in_root
from pybuild.builder.snapshot.mounts import Snapshotter, mount_lowers
from pybuild.layers.apply import apply_layer, open_layer_stream


def run_fileop(req: FileOp, snapshotter: Snapshotter) -> FileOpResult:
    step = req.step
    os.makedirs(step.step_dir, exist_ok=True)
    warnings: list[str] = []
    with Teardown() as stack:
        staged: list[tuple[FileAction, str]] = []  # each action with its sources' dir
        for i, action in enumerate(step.actions):
            src = ""
            if isinstance(action, CopyFiles):
                src = os.path.join(step.step_dir, f"src{i}")
                os.makedirs(src)
                match action.source:
                    case FromTar(direct=True):
                        pass  # decided once the rootfs is mounted (see _apply)
                    case FromTar(tar=tar):
                        _extract(tar, src)
                    case FromLowers(lowers=lowers):
                        mount_lowers(src, lowers, os.path.join(step.step_dir, "empty"))
                        stack.callback(quiet_umount, src)
            staged.append((action, src))
        root = stack.enter_context(mounted_root(snapshotter, step.step_dir, step.lowers))
        for action, src in staged:
            warnings += _apply(root.merged, action, src)
    return FileOpResult(warnings=tuple(dict.fromkeys(warnings)))


def _extract(tar: str, dest: str) -> None:
    with open_layer_stream(tar) as stream:
        apply_layer(stream, dest, overlay_format=False, whiteouts=False)


def _apply(root: str, action: FileAction, src: str) -> list[str]:
    """One action. A `direct` context copy whose destination does not exist yet is
    extracted straight onto the rootfs (no staging copy: the big-context case);
    otherwise its tar is staged and copied with the general rules."""
    if isinstance(action, CopyFiles) and isinstance(action.source, FromTar) \
            and action.source.direct:
        dest = action.dest
        real = resolve_in_root(root, dest)
        if not os.path.lexists(real):
            parent = make_dirs(root, os.path.dirname(dest.rstrip("/")) or "/", 0o755, None)
            target = os.path.join(parent, os.path.basename(dest.rstrip("/")))
            os.mkdir(target, 0o755)
            _extract(action.source.tar, target)
            os.chmod(target, 0o755)
            os.lchown(target, 0, 0)
            return []
        _extract(action.source.tar, src)
    return apply_action(root, action, src)

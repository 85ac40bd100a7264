"""Layers in and out of the sandbox: unpacking a blob into a snapshot (verified), and
committing a step's upper dir as a layer blob and a snapshot."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import time
import uuid
from collections.abc import Sequence

from pybuild.builder.executor.daemon.cleanup import rmtree
from pybuild.builder.executor.protocol import (
    Applied,
    Apply,
    CommitResult,
    CommitSpec,
    snapshot_name,
)
from pybuild.content.verify import VerifyingReader
from pybuild.digest import Digest
from pybuild.errors import IntegrityError
from pybuild.layers.apply import apply_layer
from pybuild.layers.compress import write_diff_compressed
from pybuild.layers.errors import LayerError
from pybuild.layers.xattrs import OPAQUE_XATTR, OPAQUE_XATTRS, OVERLAY_PREFIXES

# The uncompressed tar of a layer with no entries is its two zero blocks.
_EMPTY_TAR_MAX = 1024


def apply(req: Apply) -> Applied:
    """Unpack a layer blob into a snapshot dir (overlay lower format), atomically: into a
    temporary name, published under `req.dest` only once both the blob's digest and the
    tar's diff_id are what the image says. The dest is named by the diff_id, and other
    images share it: a layer whose content is not its claimed diff_id is refused, or it
    would decide what every image with that diff_id sees."""
    dest, layer = req.dest, req.layer
    if os.path.isdir(dest):
        return Applied(existed=True)
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        with open(layer.path, "rb") as raw:
            blob = VerifyingReader(raw, layer.digest, layer.size, where="content store")
            try:
                stats = apply_layer(io.BufferedReader(blob, 1 << 20), tmp, overlay_format=True)
            except Exception as exc:
                # A corrupt blob rarely unpacks: say that, rather than how the tar broke.
                try:
                    blob.drain()
                except IntegrityError as corrupt:
                    raise corrupt from exc
                if isinstance(exc, LayerError):  # the image's own layer is broken: which
                    raise LayerError(f"layer {layer.digest}: {exc.message}") from exc
                raise
            blob.drain()
        diff_id = Digest.from_hex(stats.diff_id)
        if diff_id != layer.diff_id:
            raise IntegrityError(
                f"layer {layer.digest} is not what its image says: its content hashes to "
                f"{diff_id}, the image config claims diff_id {layer.diff_id}; refusing to "
                "use it", code="integrity")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            rmtree(tmp)  # another build published it meanwhile (verified as well)
    except BaseException:
        rmtree(tmp)
        raise
    return Applied(existed=False)


def commit(step_dir: str, spec: CommitSpec) -> CommitResult:
    """Diff step_dir/upper into a layer blob; keep the upper dir as the new snapshot,
    named by the diff_id just computed; remove the step dir."""
    started = time.monotonic()
    upper = os.path.join(step_dir, "upper")
    # With the lowers known, whiteouts of paths no lower has are left out (fuse-overlayfs
    # leaves them for entries that only ever existed in the upper).
    result = write_diff_compressed(upper, spec.out, spec.compression,
                                   mtime=spec.mtime, lower_dirs=spec.lowers)
    empty = result.size <= _EMPTY_TAR_MAX
    if not empty and spec.snapshot_dir:
        strip_overlay_xattrs(upper, spec.lowers)
        dest = os.path.join(spec.snapshot_dir, snapshot_name(result.diff_id))
        try:
            os.rename(upper, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    out = CommitResult(diff_id=result.diff_id, size=result.size, digest=result.digest,
                       compressed_size=result.compressed_size, media_type=result.media_type,
                       empty=empty, seconds=time.monotonic() - started)
    rmtree(step_dir)
    return out


def strip_overlay_xattrs(root: str, lowers: Sequence[str] | None = None) -> None:
    """Overlay bookkeeping xattrs of an upper dir must not follow it into a lower dir.
    Opaque marks (kernel or fuse-overlayfs style) become `user.overlay.opaque`, which the
    kernel overlay and fuse-overlayfs both read in lowers; with `lowers` known, a mark on
    a dir that no lower has hides nothing and is dropped."""
    for dirpath, dirnames, filenames in os.walk(root):
        # Each dir is handled once, as `dirpath` (its opaque mark is read before removal);
        # symlinks to dirs show up in dirnames and are never walked.
        links = [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
        for name in [dirpath, *(os.path.join(dirpath, n) for n in filenames + links)]:
            try:
                attrs = os.listxattr(name, follow_symlinks=False)
            except OSError:
                continue
            opaque = any(a in OPAQUE_XATTRS and os.getxattr(name, a, follow_symlinks=False)
                         == b"y" for a in attrs)
            for a in attrs:
                if a.startswith(OVERLAY_PREFIXES):
                    with contextlib.suppress(OSError):
                        os.removexattr(name, a, follow_symlinks=False)
            marker = os.path.join(name, ".wh..wh..opq")
            if name == dirpath and os.path.lexists(marker):
                opaque = True
                with contextlib.suppress(OSError):
                    os.unlink(marker)
            if opaque and name == dirpath:
                rel = os.path.relpath(dirpath, root)
                if lowers is not None and not any(
                        os.path.isdir(os.path.join(lw, rel)) for lw in lowers):
                    continue
                with contextlib.suppress(OSError):
                    os.setxattr(name, OPAQUE_XATTR, b"y", follow_symlinks=False)

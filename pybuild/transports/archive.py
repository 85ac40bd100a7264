"""A deterministic tar stream of store blobs, and the verified copy of one blob out of the
store: what the OCI-archive and docker-archive writers share.

The tar is byte-stable: entries in the order added (callers sort them), mtime 0, owner
0:0, fixed modes (containerd's archive exporter uses the same modes and zero mtimes).
"""

from __future__ import annotations

import os
import tarfile
from typing import IO

from pybuild.content.store import ContentStore
from pybuild.content.verify import VerifyingReader, check_blob, size_mismatch
from pybuild.digest import Digest
from pybuild.layers.hashsink import FileHashWriter, plain_file_fd
from pybuild.oci.descriptor import Descriptor

ARCHIVE_MTIME = 0
MODE_BLOB = 0o444
MODE_DIR = 0o755
MODE_FILE = 0o644
_CHUNK = 1 << 20
_STORE = "content store"


def blob_path(digest: Digest) -> str:
    """Where a layout (or a Docker 25+ archive) keeps a blob."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def copy_blob_verified(store: ContentStore, desc: Descriptor, dst: IO[bytes]) -> None:
    """Stream a store blob into `dst`, raising IntegrityError if it is not what `desc` says.

    Into a regular file open for reading and writing (an archive or layout file being
    written), the blob is copied in-kernel and hashed back *from `dst`* on a worker thread
    (FileHashWriter): the check covers the bytes as written, and the blob never passes
    through Python. Elsewhere (a pipe, stdout, a device) it is streamed and hashed on the
    way.
    """
    fd = plain_file_fd(dst)
    if fd is not None:
        _copy_blob_to_file(store, desc, dst, fd)
        return
    with store.open(desc.digest) as f:
        reader = VerifyingReader(f, desc.digest, desc.size, where=_STORE)
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := reader.readinto(buf):
            dst.write(view[:n])
        reader.finish()


def _copy_blob_to_file(store: ContentStore, desc: Descriptor, dst: IO[bytes], fd: int) -> None:
    with store.open(desc.digest) as f:
        size = os.fstat(f.fileno()).st_size
        if size > desc.size:
            raise size_mismatch(desc.digest, desc.size, None, _STORE)
        dst.flush()
        writer = FileHashWriter(fd)
        try:
            copied = writer.copy_fd(f.fileno(), desc.size)
            digest_hex, _ = writer.close()
        except BaseException:
            writer.abort()
            raise
    dst.seek(os.lseek(fd, 0, os.SEEK_CUR))  # past the blob, written through the descriptor
    check_blob(desc.digest, desc.size, actual_digest=f"sha256:{digest_hex}",
               actual_size=copied, where=_STORE)


class ArchiveWriter:
    """A tar stream with fixed metadata, written in the order entries are added.

    Headers come from `TarInfo.tobuf` (PAX format; these short ASCII names never need an
    extended header), data is streamed straight to `out`: no seeks, so stdout and pipes
    work. The archive ends with the two zero blocks and no record padding, as Go's
    archive/tar writes it. Callers add entries sorted by name.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._closed = False

    def _header(self, name: str, mode: int, size: int = 0, *, is_dir: bool = False) -> None:
        if self._closed:
            raise ValueError("archive is closed")
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.size = size
        info.mtime = ARCHIVE_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        self._out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._out.write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_dir(self, name: str) -> None:
        self._header(name.rstrip("/") + "/", MODE_DIR, is_dir=True)

    def add_bytes(self, name: str, data: bytes, *, mode: int = MODE_FILE) -> None:
        self._header(name, mode, len(data))
        self._out.write(data)
        self._pad(len(data))

    def add_blob(self, store: ContentStore, desc: Descriptor) -> None:
        # Checked before the header goes out, so a short blob cannot tear the archive.
        size = store.size(desc.digest)
        if size != desc.size:
            raise size_mismatch(desc.digest, desc.size, size, _STORE)
        self._header(blob_path(desc.digest), MODE_BLOB, desc.size)
        copy_blob_verified(store, desc, self._out)
        self._pad(desc.size)

    def add_blobs(self, store: ContentStore, blobs: tuple[Descriptor, ...]) -> None:
        """The `blobs/` tree: its directories, then every blob sorted by path."""
        by_path = {blob_path(d.digest): d for d in blobs if store.has(d.digest)}
        algorithms = sorted({d.digest.algorithm for d in by_path.values()})
        self.add_dir("blobs")
        for alg in algorithms:
            self.add_dir(f"blobs/{alg}")
        for path in sorted(by_path):
            self.add_blob(store, by_path[path])

    def close(self) -> None:
        """Write the end-of-archive blocks. Does not close `out`."""
        if not self._closed:
            self._out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
            self._closed = True

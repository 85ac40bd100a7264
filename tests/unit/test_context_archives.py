"""F12: tar contexts (`-` on stdin, tarball URLs) unpack under the layer applier's
decompression limits (`layers.decompress.ExpansionLimits`), in every compression
buildx accepts for a context."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest
import zstandard

from pybuild.contexts import unpack
from pybuild.layers.decompress import ExpansionLimits
from pybuild.layers.errors import LayerTooLargeError

SMALL = ExpansionLimits(max_ratio=10.0, ratio_floor=1 << 20)


def _tar(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
        info = tarfile.TarInfo("Dockerfile")
        info.size = 12
        tar.addfile(info, io.BytesIO(b"FROM scratch"))
    return buf.getvalue()


COMPRESS = {
    "gzip": lambda d: gzip.compress(d, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_context_bomb_is_refused(tmp_path: Path, kind: str) -> None:
    data = COMPRESS[kind](_tar(8 << 20))  # 8 MiB of zeros: far beyond 10x
    with pytest.raises(LayerTooLargeError) as err:
        unpack(io.BytesIO(data), tmp_path, "the context archive", limits=SMALL)
    assert "the context archive is a decompression bomb" in err.value.message
    assert not (tmp_path / "zeros").exists() or (tmp_path / "zeros").stat().st_size < 8 << 20


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_ordinary_context_unpacks(tmp_path: Path, kind: str) -> None:
    data = COMPRESS[kind](_tar(1000))
    unpack(io.BytesIO(data), tmp_path, "the context archive", limits=SMALL)
    assert (tmp_path / "Dockerfile").read_bytes() == b"FROM scratch"

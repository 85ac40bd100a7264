"""The rpm header format and the rpm scanner's refusals (a real database made by rpm is
scanned in tests/integration/test_attest_binaries.py)."""

from __future__ import annotations

import io
import sqlite3
import struct
import tempfile
from pathlib import Path

import pytest

from pybuild.attest.sbom import rpmheader as rh
from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.rpm import RpmScanner, read_sqlite_headers
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, tar_layer


def header(tags: list[tuple[int, int, bytes, int]]) -> bytes:
    """An rpm header blob: (tag, type, data, count) entries, data laid out in order."""
    index, store = b"", b""
    for tag, kind, data, count in tags:
        index += struct.pack(">IIII", tag, kind, len(store), count)
        store += data
    return struct.pack(">II", len(tags), len(store)) + index + store


def _sqlite(blobs: list[bytes]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rpmdb.sqlite"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "blob BLOB NOT NULL)")
        conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
        conn.commit()
        conn.close()
        return path.read_bytes()


BASH = header([
    (rh.NAME, 6, b"bash\0", 1), (rh.VERSION, 6, b"5.1.8\0", 1), (rh.RELEASE, 6, b"6.el9\0", 1),
    (rh.ARCH, 6, b"x86_64\0", 1), (rh.LICENSE, 6, b"GPLv3+\0", 1),
    (rh.SOURCERPM, 6, b"bash-5.1.8-6.el9.src.rpm\0", 1), (rh.VENDOR, 6, b"Red Hat, Inc.\0", 1),
    (rh.DIRNAMES, 8, b"/usr/bin/\0", 1), (rh.BASENAMES, 8, b"bash\0sh\0", 2),
    (rh.DIRINDEXES, 4, struct.pack(">II", 0, 0), 2),
    (rh.FILEDIGESTS, 8, b"ab" * 32 + b"\0\0", 2), (rh.FILEDIGESTALGO, 4, struct.pack(">I", 8), 1),
])
KEY = header([(rh.NAME, 6, b"gpg-pubkey\0", 1), (rh.VERSION, 6, b"fd431d51\0", 1)])
OS_RELEASE = b'NAME="Red Hat Enterprise Linux"\nID="rhel"\nVERSION_ID="9.3"\n'


def test_sqlite_database_packages_purls_and_files() -> None:
    layer = tar_layer([Entry("etc/os-release", data=OS_RELEASE),
                       Entry("var/lib/rpm/rpmdb.sqlite", data=_sqlite([BASH, KEY]))])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]), scanners=[RpmScanner()])
    (bash,) = inv.packages  # the gpg-pubkey header is not a package
    assert bash.purl == ("pkg:rpm/redhat/bash@5.1.8-6.el9?arch=x86_64&distro=rhel-9.3"
                         "&upstream=bash-5.1.8-6.el9.src.rpm")
    assert bash.version == "5.1.8-6.el9" and bash.licenses == ("GPLv3+",)
    assert bash.supplier == "Organization: Red Hat, Inc."
    assert [(f.path, f.checksums) for f in bash.files] == [
        ("/usr/bin/bash", (("SHA256", "ab" * 32),)), ("/usr/bin/sh", ())]


def test_other_database_formats_are_named_in_a_warning() -> None:
    layer = tar_layer([Entry("var/lib/rpm/Packages", data=b"\0\0\0\0\x61\x15\x06\0" * 64),
                       Entry("usr/lib/sysimage/rpm/rpmdb.sqlite", data=b"not sqlite at all")])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]), scanners=[RpmScanner()])
    assert inv.packages == ()
    assert any("BerkeleyDB format is not read" in w for w in inv.warnings)
    assert any("/usr/lib/sysimage/rpm/rpmdb.sqlite: not an rpm sqlite database" in w
               for w in inv.warnings)


@pytest.mark.parametrize("blob", [
    b"\0\0\0\x01",  # truncated
    struct.pack(">II", 1, 4) + struct.pack(">IIII", rh.NAME, 6, 0, 1) + b"abcd",  # no NUL
    struct.pack(">II", 1, 4) + struct.pack(">IIII", rh.DIRINDEXES, 4, 0, 1000) + b"\0" * 4,
    struct.pack(">II", 0xFFFFFFFF, 0),  # absurd count
])
def test_hostile_headers_are_value_errors(blob: bytes) -> None:
    with pytest.raises(ValueError):
        rh.parse_header(blob)


def test_a_database_with_hostile_header_is_refused_whole() -> None:
    with pytest.raises(ValueError):
        read_sqlite_headers(_sqlite([b"\0\0\0\x01"]))

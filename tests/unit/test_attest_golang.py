"""Go build info: the modinfo format, and an ELF laid out as the Go linker lays it out
(the real esbuild binary is scanned in tests/integration/test_attest_binaries.py)."""

from __future__ import annotations

import io
import struct

from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.golang import (
    MAGIC,
    GoBinaryScanner,
    GoModule,
    parse_modinfo,
    read_build_info,
)
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, tar_layer

SENTINEL_START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
SENTINEL_END = bytes.fromhex("f932433186182072008242104116d8f2")
MODINFO = (
    "path\texample.com/cmd/tool\n"
    "mod\texample.com\tv1.4.0\th1:abc=\n"
    "dep\tgithub.com/pkg/errors\tv0.9.1\th1:FEBL=\n"
    "dep\tgolang.org/x/sys\tv0.1.0\th1:old=\n"
    "=>\tgolang.org/x/sys\tv0.2.0\th1:new=\n"
    "build\t-compiler=gc\n"
    "build\tvcs.revision=0123456789abcdef0123456789abcdef01234567\n"
    "build\tvcs.time=2024-03-14T19:49:11Z\n"
)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def go_elf(version: str, modinfo: str) -> bytes:
    """A little-endian ELF64 with a .go.buildinfo section in the Go 1.18+ layout."""
    mod = SENTINEL_START + modinfo.encode() + SENTINEL_END
    info = MAGIC + bytes([8, 2]) + b"\0" * 16  # ptrSize 8, flags: inline strings
    info += _uvarint(len(version)) + version.encode() + _uvarint(len(mod)) + mod
    shstrtab = b"\0.go.buildinfo\0.shstrtab\0"
    info_off = 0x1000  # real Go binaries are megabytes; the scanner skips tiny files
    strtab_off = info_off + len(info)
    shoff = (strtab_off + len(shstrtab) + 7) & ~7
    header = bytearray(64)
    header[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<HHIQQQIHHHHHH", header, 16, 2, 0x3E, 1, 0, 0, shoff, 0, 64, 56, 0,
                     64, 3, 2)
    sections = bytes(64)  # the null section
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 3, 0, info_off, len(info), 0, 0, 16, 0)
    sections += struct.pack("<IIQQQQIIQQ", 15, 3, 0, 0, strtab_off, len(shstrtab), 0, 0, 1, 0)
    body = bytearray(shoff)
    body[:64] = header
    body[info_off:info_off + len(info)] = info
    body[strtab_off:strtab_off + len(shstrtab)] = shstrtab
    return bytes(body) + sections


def test_modinfo_with_replacements() -> None:
    info = parse_modinfo("go1.22.1", MODINFO)
    assert info.path == "example.com/cmd/tool"
    assert info.main == GoModule(path="example.com", version="v1.4.0", sum="h1:abc=")
    assert info.deps == (GoModule(path="github.com/pkg/errors", version="v0.9.1", sum="h1:FEBL="),
                         GoModule(path="golang.org/x/sys", version="v0.2.0", sum="h1:new="))
    assert ("vcs.time", "2024-03-14T19:49:11Z") in info.settings


def test_build_info_from_an_elf_section() -> None:
    info = read_build_info(io.BytesIO(go_elf("go1.22.1", MODINFO)))
    assert info is not None and info.go_version == "go1.22.1"
    assert info.main is not None and info.main.version == "v1.4.0"
    assert read_build_info(io.BytesIO(b"\x7fELF" + b"\0" * 100)) is None
    assert read_build_info(io.BytesIO(b"#!/bin/sh\n")) is None


def test_scanner_packages_stdlib_and_devel_pseudo_versions() -> None:
    devel = MODINFO.replace("v1.4.0\th1:abc=", "(devel)\t")
    layer = tar_layer([Entry("usr/bin/tool", data=go_elf("go1.22.1", devel), mode=0o755),
                       Entry("usr/bin/notgo", data=b"\x7fELF" + b"\0" * 2000, mode=0o755),
                       Entry("usr/share/tool.elf", data=go_elf("go1.22.1", MODINFO))])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]),
               scanners=[GoBinaryScanner()])
    purls = {p.purl for p in inv.packages}
    assert purls == {
        "pkg:golang/example.com@v0.0.0-20240314194911-0123456789ab",
        "pkg:golang/github.com/pkg/errors@v0.9.1",
        "pkg:golang/golang.org/x/sys@v0.2.0",
        "pkg:golang/stdlib@1.22.1",
    }  # not the non-executable copy
    assert {p.location for p in inv.packages} == {"/usr/bin/tool"}

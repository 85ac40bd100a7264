"""Go binaries' embedded build info (`\\xff Go buildinf:`), read as Go's debug/buildinfo does.

Only executable ELF files are looked at, and of them only the ELF header, the section
table and the `.go.buildinfo` section (or, without sections, the start of the first
writable PT_LOAD segment): a few small reads per binary, never the whole file. Both header
formats are read: Go 1.18+ (version and module info inline, varint-prefixed) and older
(pointers to Go strings, translated through the PT_LOAD segments). Each binary gives its
main module (a `(devel)` version becomes the pseudo-version its VCS stamp implies, as Syft
does), its dependencies (replacements applied) and the Go standard library it was built
with (`pkg:golang/stdlib@1.22.1`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from pybuild.attest.purl import purl
from pybuild.attest.sbom.fsview import FileEntry, Wanted
from pybuild.attest.sbom.model import Package
from pybuild.attest.sbom.scanner import Found

MAGIC = b"\xff Go buildinf:"
_HEADER = 32
_ALIGN = 16
_SEARCH = 64 << 10
_MAX_STRING = 16 << 20
_PT_LOAD = 1
_PF_X, _PF_W = 1, 2
MIN_SIZE = 1024  # smaller executables are scripts or stubs, not Go binaries


@dataclass(frozen=True, slots=True, kw_only=True)
class GoModule:
    path: str
    version: str
    sum: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GoBuildInfo:
    go_version: str
    path: str = ""
    main: GoModule | None = None
    deps: tuple[GoModule, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()


class _Elf:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        ident = self._read(0, 64)
        if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2):
            raise ValueError("not an ELF file")
        self.is64 = ident[4] == 2
        self.end = "<" if ident[5] == 1 else ">"
        e = self.end
        if self.is64:
            phoff, shoff = struct.unpack_from(e + "QQ", ident, 32)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(e + "HHHHH",
                                                                              ident, 54)
        else:
            phoff, shoff = struct.unpack_from(e + "II", ident, 28)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(e + "HHHHH",
                                                                              ident, 42)
        self.loads: list[tuple[int, int, int, int]] = []  # (vaddr, offset, filesz, flags)
        if phnum and phnum < 4096 and phentsize >= (56 if self.is64 else 32):
            table = self._read(phoff, phentsize * phnum)
            for i in range(len(table) // phentsize):
                off = i * phentsize
                if self.is64:
                    ptype, flags, offset, vaddr, _, filesz = struct.unpack_from(
                        e + "IIQQQQ", table, off)
                else:
                    ptype, offset, vaddr, _, filesz, _, flags = struct.unpack_from(
                        e + "IIIIIII", table, off)
                if ptype == _PT_LOAD:
                    self.loads.append((vaddr, offset, filesz, flags))
        self.sections: dict[str, tuple[int, int]] = {}  # name -> (offset, size)
        if shnum and shnum < 65536 and shentsize >= (64 if self.is64 else 40):
            table = self._read(shoff, shentsize * shnum)
            rows = []
            for i in range(len(table) // shentsize):
                off = i * shentsize
                if self.is64:
                    name, _, _, _, offset, size = struct.unpack_from(e + "IIQQQQ", table, off)
                else:
                    name, _, _, _, offset, size = struct.unpack_from(e + "IIIIII", table, off)
                rows.append((name, offset, size))
            if shstrndx < len(rows):
                _, str_off, str_size = rows[shstrndx]
                names = self._read(str_off, min(str_size, 1 << 20))
                for name, offset, size in rows:
                    end = names.find(b"\0", name)
                    if 0 <= name < len(names) and end > name:
                        self.sections[names[name:end].decode("ascii", "replace")] = (offset,
                                                                                     size)

    def _read(self, offset: int, size: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(size)

    def data_start(self) -> tuple[int, int] | None:
        """(file offset, size) of where the build info header is searched."""
        if ".go.buildinfo" in self.sections:
            return self.sections[".go.buildinfo"]
        for _, offset, filesz, flags in self.loads:
            if flags & (_PF_X | _PF_W) == _PF_W:
                return offset, filesz
        return None

    def read_at_vaddr(self, vaddr: int, size: int) -> bytes:
        for start, offset, filesz, _ in self.loads:
            if start <= vaddr < start + filesz:
                size = min(size, start + filesz - vaddr)
                return self._read(offset + vaddr - start, size)
        raise ValueError("address outside the file")


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def read_build_info(f: BinaryIO) -> GoBuildInfo | None:
    """The build info of the Go binary `f`, or None if it is not one."""
    try:
        elf = _Elf(f)
        start = elf.data_start()
        if start is None:
            return None
        offset, size = start
        region = elf._read(offset, min(size, _SEARCH))
        pos = 0
        while True:
            i = region.find(MAGIC, pos)
            if i < 0 or len(region) - i < _HEADER:
                return None
            if i % _ALIGN == 0:
                break
            pos = (i + _ALIGN - 1) & ~(_ALIGN - 1)
        header = region[i : i + _HEADER]
        ptr_size, flags = header[14], header[15]
        if flags & 2:  # Go 1.18+: inline, varint-prefixed strings after the header
            tail = elf._read(offset + i + _HEADER, 20)
            vlen, p = _uvarint(tail, 0)
            if vlen > _MAX_STRING:
                return None
            blob = elf._read(offset + i + _HEADER, p + vlen + 20)
            version = blob[p : p + vlen].decode("utf-8", "replace")
            mlen, q = _uvarint(blob, p + vlen)
            if mlen > _MAX_STRING:
                return None
            mod = elf._read(offset + i + _HEADER + q, mlen).decode("utf-8", "replace")
        else:
            if ptr_size not in (4, 8):
                return None
            end = ">" if flags & 1 else "<"
            fmt = end + ("Q" if ptr_size == 8 else "I")

            def go_string(addr: int) -> str:
                hdr = elf.read_at_vaddr(addr, 2 * ptr_size)
                data_ptr = struct.unpack_from(fmt, hdr, 0)[0]
                length = struct.unpack_from(fmt, hdr, ptr_size)[0]
                if length > _MAX_STRING:
                    raise ValueError("string too long")
                return elf.read_at_vaddr(data_ptr, length).decode("utf-8", "replace")

            version = go_string(struct.unpack_from(fmt, header, 16)[0])
            mod = go_string(struct.unpack_from(fmt, header, 16 + ptr_size)[0])
    except (ValueError, struct.error, OSError):
        return None
    if len(mod) >= 33 and mod[-17] == "\n":
        mod = mod[16:-16]
    else:
        mod = ""
    return parse_modinfo(version, mod)


def parse_modinfo(go_version: str, text: str) -> GoBuildInfo:
    path = ""
    main: GoModule | None = None
    deps: list[GoModule] = []
    settings: list[tuple[str, str]] = []
    last: str = ""
    for line in text.splitlines():
        fields = line.split("\t")
        match fields:
            case ["path", value, *_]:
                path = value
            case ["mod", mpath, version, *rest]:
                main = GoModule(path=mpath, version=version, sum=rest[0] if rest else "")
                last = "mod"
            case ["dep", mpath, version, *rest]:
                deps.append(GoModule(path=mpath, version=version, sum=rest[0] if rest else ""))
                last = "dep"
            case ["=>", mpath, version, *rest]:
                replacement = GoModule(path=mpath, version=version,
                                       sum=rest[0] if rest else "")
                if last == "dep" and deps:
                    deps[-1] = replacement
                elif last == "mod":
                    main = replacement
            case ["build", setting]:
                key, _, value = setting.partition("=")
                settings.append((key, value))
            case _:
                continue
    return GoBuildInfo(go_version=go_version, path=path, main=main, deps=tuple(deps),
                       settings=tuple(settings))


def _pseudo_version(info: GoBuildInfo) -> str:
    """`v0.0.0-YYYYMMDDhhmmss-REVISION12` from the VCS stamp of a `(devel)` build."""
    settings = dict(info.settings)
    revision, when = settings.get("vcs.revision", ""), settings.get("vcs.time", "")
    stamp = "".join(c for c in when if c.isdigit())[:14]
    if len(revision) < 12 or len(stamp) != 14:
        return ""
    return f"v0.0.0-{stamp}-{revision[:12]}"


def go_purl(module: str, version: str) -> str:
    namespace, _, name = module.rpartition("/")
    return purl("golang", name, version, namespace=namespace)


class GoBinaryScanner:
    name = "go-module-binary-scanner"

    def select(self, entry: FileEntry) -> Wanted | None:
        if entry.executable and entry.size >= MIN_SIZE:
            return Wanted(analyze=read_build_info, magic=b"\x7fELF", limit=1 << 30)
        return None

    def catalog(self, found: Found) -> Iterable[Package]:
        out: list[Package] = []
        for path, info in found.results():
            if not isinstance(info, GoBuildInfo):
                continue
            modules: list[GoModule] = []
            if info.main is not None and info.main.path:
                version = info.main.version
                if version == "(devel)":
                    version = _pseudo_version(info) or version
                modules.append(GoModule(path=info.main.path, version=version,
                                        sum=info.main.sum))
            modules.extend(info.deps)
            for module in modules:
                out.append(Package(
                    type="go-module", name=module.path, version=module.version,
                    purl=go_purl(module.path, module.version), found_by=self.name,
                    location=path,
                ))
            go = info.go_version.split()[0] if info.go_version else ""
            if go.startswith("go"):
                out.append(Package(
                    type="go-module", name="stdlib", version=go,
                    purl=purl("golang", "stdlib", go.removeprefix("go")), found_by=self.name,
                    location=path, licenses=("BSD-3-Clause",),
                ))
        return out

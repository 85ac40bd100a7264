"""The apk scanner on a real-format /lib/apk/db/installed excerpt (Alpine 3.19)."""

from __future__ import annotations

import io

from pybuild.attest.sbom.alpine import ApkScanner
from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, tar_layer

INSTALLED = b"""\
C:Q1Et5UfBAd2lNGU0mvOIFDwnA3+pA=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407278
I:663552
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
t:1700141231
c:4ee1bcda53c1ea0c15ad3bd7c60cb6e3ea1b7c4b
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1rDlyTPmJGj8cs2vLs0lPrh6VkLM=
R:libc.musl-x86_64.so.1
a:0:0:777
Z:Q1yFQuvtIgRu8Fth5v12P0Z7ES8WA=

C:Q1vj1Mj7o6A2SoIx3vB9VXvSkq0kc=
P:libcrypto3
V:3.1.4-r1
A:x86_64
L:Apache-2.0
o:openssl
m:Ariadne Conill <ariadne@dereferenced.org>
F:usr
F:usr/lib
R:libcrypto.so.3
Z:Q1d3ty0Pz0Pb6cxnHe6Dq2PQNtubE=

P:busybox
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only MIT
o:busybox
F:bin
R:busybox

"""
OS_RELEASE = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.0\n'


def _scan() -> list:
    layer = tar_layer([Entry("etc/os-release", data=OS_RELEASE),
                       Entry("lib/apk/db/installed", data=INSTALLED),
                       Entry("lib/ld-musl-x86_64.so.1", data=b"\x7fELF", mode=0o755)])
    return list(scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]),
                     scanners=[ApkScanner()]).packages)


def test_packages_purls_and_licences() -> None:
    by_name = {p.name: p for p in _scan()}
    assert set(by_name) == {"musl", "libcrypto3", "busybox"}
    assert by_name["musl"].purl == (
        "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.0")
    assert by_name["libcrypto3"].purl == (
        "pkg:apk/alpine/libcrypto3@3.1.4-r1?arch=x86_64&distro=alpine-3.19.0&upstream=openssl")
    assert by_name["musl"].licenses == ("MIT",)
    assert by_name["busybox"].licenses == ("GPL-2.0-only", "MIT")  # space-separated list
    assert by_name["musl"].supplier == "Person: Natanael Copa (ncopa@alpinelinux.org)"


def test_files_with_their_sha1() -> None:
    by_name = {p.name: p for p in _scan()}
    files = {f.path: dict(f.checksums) for f in by_name["musl"].files}
    assert files == {
        "/lib/ld-musl-x86_64.so.1": {"SHA1": "ac39724cf9891a3f1cb36bcbb3494fae1e9590b3"},
        "/lib/libc.musl-x86_64.so.1": {"SHA1": "c8542ebed22046ef05b61e6fd763f467b112f160"},
    }
    assert [f.path for f in by_name["libcrypto3"].files] == ["/usr/lib/libcrypto.so.3"]

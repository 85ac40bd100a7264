"""The dpkg scanner on real-format database excerpts (from a Debian 12 minbase)."""

from __future__ import annotations

import io

from pybuild.attest.sbom.debian import DpkgScanner, copyright_licenses, paragraphs
from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, tar_layer

OS_RELEASE = (b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
              b'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n')
STATUS = b"""\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 13001
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u14
Depends: libgcc-s1
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
Homepage: https://www.gnu.org/software/libc/libc.html

Package: tree
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 113
Maintainer: Florian Ernst <florian@debian.org>
Architecture: amd64
Version: 2.1.0-1
Depends: libc6 (>= 2.34)
Description: displays an indented directory tree, in color
Homepage: http://mama.indstate.edu/users/ice/tree/

Package: bash
Essential: yes
Status: install ok installed
Maintainer: Matthias Klose <doko@debian.org>
Architecture: amd64
Source: bash (5.2.15-2)
Version: 5.2.15-2+b13

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

"""
TREE_LIST = b"""/.
/usr
/usr/bin
/usr/bin/tree
/usr/share
/usr/share/doc
/usr/share/doc/tree
/usr/share/doc/tree/copyright
"""
TREE_MD5 = (b"6050710ac1dcb11cfeec58da39685dd9  usr/bin/tree\n"
            b"e3a57daf37e62ac158dea5e4d76c1b3a  usr/share/doc/tree/copyright\n")
TREE_COPYRIGHT = b"""\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tree
Source: http://mama.indstate.edu/users/ice/tree/

Files: *
Copyright: 1996-2022, Steve Baker (ice@mama.indstate.edu)
License: GPL-2+

Files: strverscmp.c
Copyright: 1997, 2002, 2005, Free Software Foundation, Inc.
License: LGPL-2.1+

License: GPL-2+
  On Debian systems the full text of the GPL-2 can be found in
  /usr/share/common-licenses/GPL-2
"""
LIBC_COPYRIGHT = b"""This is the Debian prepackaged version of the GNU C Library.

It is licensed under the LGPL; on Debian systems see
/usr/share/common-licenses/LGPL-2.1. Some files are under
/usr/share/common-licenses/GPL-2.
"""


def _image(*extra: Entry) -> LayerStackView:
    layer = tar_layer([
        Entry("usr/lib/os-release", data=OS_RELEASE),
        Entry("etc/os-release", "symlink", link="../usr/lib/os-release"),
        Entry("var/lib/dpkg/status", data=STATUS),
        Entry("var/lib/dpkg/info/tree.list", data=TREE_LIST),
        Entry("var/lib/dpkg/info/tree.md5sums", data=TREE_MD5),
        Entry("var/lib/dpkg/info/libc6:amd64.list",
              data=b"/.\n/etc\n/etc/ld.so.conf.d/x86_64-linux-gnu.conf\n/lib64\n"),
        Entry("usr/bin/tree", data=b"\x7fELF", mode=0o755),
        Entry("usr/share/doc/tree/copyright", data=TREE_COPYRIGHT),
        Entry("usr/share/doc/libc6/copyright", data=LIBC_COPYRIGHT),
        Entry("lib64", "dir"),
        *extra,
    ])
    return LayerStackView([Layer(open=lambda: io.BytesIO(layer), digest="")])


def test_installed_packages_with_purls_as_syft_writes_them() -> None:
    inv = scan(_image(), scanners=[DpkgScanner()])
    by_name = {p.name: p for p in inv.packages}
    assert set(by_name) == {"libc6", "tree", "bash"}  # "deinstall" is not installed
    assert inv.distro is not None and inv.distro.qualifier == "debian-12"
    assert by_name["libc6"].purl == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12&upstream=glibc")
    assert by_name["bash"].purl == ("pkg:deb/debian/bash@5.2.15-2%2Bb13?arch=amd64"
                                    "&distro=debian-12&upstream=bash%405.2.15-2")
    assert by_name["tree"].purl == "pkg:deb/debian/tree@2.1.0-1?arch=amd64&distro=debian-12"
    assert by_name["tree"].supplier == "Person: Florian Ernst (florian@debian.org)"
    assert by_name["tree"].location == "/var/lib/dpkg/status"


def test_owned_files_come_from_the_list_with_md5s_and_skip_directories() -> None:
    inv = scan(_image(), scanners=[DpkgScanner()])
    by_name = {p.name: p for p in inv.packages}
    tree_files = {f.path: dict(f.checksums) for f in by_name["tree"].files}
    assert tree_files == {
        "/usr/bin/tree": {"MD5": "6050710ac1dcb11cfeec58da39685dd9"},
        "/usr/share/doc/tree/copyright": {"MD5": "e3a57daf37e62ac158dea5e4d76c1b3a"},
    }
    # Multi-Arch: same packages keep their list as NAME:ARCH.list; conffiles add MD5s.
    libc = {f.path: dict(f.checksums) for f in by_name["libc6"].files}
    assert libc == {"/etc/ld.so.conf.d/x86_64-linux-gnu.conf":
                    {"MD5": "d4e7a7b88a71b5ffd9e2644e71a0cfab"}}


def test_licences_from_machine_readable_and_plain_copyright_files() -> None:
    assert copyright_licenses(TREE_COPYRIGHT.decode()) == ("GPL-2+", "LGPL-2.1+")
    assert copyright_licenses(LIBC_COPYRIGHT.decode()) == ("LGPL-2.1", "GPL-2")
    inv = scan(_image(), scanners=[DpkgScanner()])
    assert {p.name: p.licenses for p in inv.packages}["bash"] == ()


def test_distroless_status_d() -> None:
    layer = tar_layer([
        Entry("etc/os-release", data=OS_RELEASE),
        Entry("var/lib/dpkg/status.d/base-files", data=b"Package: base-files\n"
              b"Version: 12.4+deb12u5\nArchitecture: amd64\nMaintainer: Santiago Vila "
              b"<sanvila@debian.org>\n"),
        Entry("var/lib/dpkg/status.d/base-files.md5sums",
              data=b"da9f3e5a56d6162ea9d5feed57fbf349  etc/debian_version\n"),
        Entry("etc/debian_version", data=b"12.4\n"),
    ])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]),
               scanners=[DpkgScanner()])
    (pkg,) = inv.packages
    assert pkg.name == "base-files" and pkg.location == "/var/lib/dpkg/status.d/base-files"
    assert [(f.path, f.checksums) for f in pkg.files] == [
        ("/etc/debian_version", (("MD5", "da9f3e5a56d6162ea9d5feed57fbf349"),))]


def test_ubuntu_namespace_and_no_distro_fallback() -> None:
    ubuntu = b'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n'
    inv = scan(_image(Entry("etc/os-release", data=ubuntu)), scanners=[DpkgScanner()])
    assert {p.name: p.purl for p in inv.packages}["tree"] == (
        "pkg:deb/ubuntu/tree@2.1.0-1?arch=amd64&distro=ubuntu-22.04")


def test_deb822_continuations_and_garbage() -> None:
    paras = list(paragraphs("A: 1\nB: x\n y\n.\nnot a field\n\n\nC: 3\n"))
    assert paras == [{"A": "1", "B": "x\ny"}, {"C": "3"}]

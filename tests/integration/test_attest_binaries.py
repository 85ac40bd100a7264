"""Scanners on artifacts made by the real tools: a Go binary built by Go's toolchain
(esbuild, from the npm registry) and an rpm database written by rpm itself."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from pybuild.attest.sbom.fsview import DirectoryView, Layer, LayerStackView
from pybuild.attest.sbom.golang import GoBinaryScanner, read_build_info
from pybuild.attest.sbom.rpm import RpmScanner
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, go_binary, rpm_database, tar_layer
from tests.tooling import require_tool


@pytest.fixture(scope="module")
def esbuild() -> Path:
    require_tool("npm")
    return go_binary()


def test_a_real_go_binary(esbuild: Path) -> None:
    with open(esbuild, "rb") as f:
        info = read_build_info(f)
    assert info is not None
    assert info.go_version == "go1.20.12"
    assert info.path == "github.com/evanw/esbuild/cmd/esbuild"
    assert info.main is not None and info.main.path == "github.com/evanw/esbuild"
    assert [(d.path, d.version) for d in info.deps] == [
        ("golang.org/x/sys", "v0.0.0-20220715151400-c0bba94af5f8")]
    # The scanner reads only the ELF header, the section table and .go.buildinfo.
    strings = subprocess.run([require_tool("strings"), "-n", "8", str(esbuild)],
                             capture_output=True, text=True, check=True).stdout
    assert "vcs.revision=617eddaa32b7649ad23ddd15257816df3f0f544c" in strings


@pytest.mark.parametrize("as_layers", [False, True])
def test_go_binary_packages(esbuild: Path, tmp_path: Path, as_layers: bool) -> None:
    data = esbuild.read_bytes()
    if as_layers:
        layer = tar_layer([Entry("usr/local/bin/esbuild", data=data, mode=0o755)])
        view: LayerStackView | DirectoryView = LayerStackView(
            [Layer(open=lambda: io.BytesIO(layer))])
    else:
        (tmp_path / "usr/local/bin").mkdir(parents=True)
        (tmp_path / "usr/local/bin/esbuild").write_bytes(data)
        (tmp_path / "usr/local/bin/esbuild").chmod(0o755)
        view = DirectoryView(tmp_path)
    inv = scan(view, scanners=[GoBinaryScanner()])
    assert {p.purl for p in inv.packages} == {
        "pkg:golang/github.com/evanw/esbuild@v0.0.0-20240314194911-617eddaa32b7",
        "pkg:golang/golang.org/x/sys@v0.0.0-20220715151400-c0bba94af5f8",
        "pkg:golang/stdlib@1.20.12",
    }
    assert {p.location for p in inv.packages} == {"/usr/local/bin/esbuild"}


def test_a_real_rpm_database() -> None:
    require_tool("rpmbuild")
    db = rpm_database()
    os_release = b'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=39\n'
    layer = tar_layer([Entry("etc/os-release", data=os_release),
                       Entry("usr/lib/sysimage/rpm/rpmdb.sqlite", data=db.read_bytes()),
                       Entry("var/lib/rpm", "symlink", link="../../usr/lib/sysimage/rpm"),
                       Entry("usr/bin/pbdemo", data=b"hello\n", mode=0o755)])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]), scanners=[RpmScanner()])
    (pkg,) = inv.packages
    assert pkg.name == "pbdemo" and pkg.version == "2:1.2.3-4.fc39"
    assert pkg.purl == ("pkg:rpm/fedora/pbdemo@1.2.3-4.fc39?arch=x86_64&distro=fedora-39"
                        "&epoch=2&upstream=pbdemo-1.2.3-4.fc39.src.rpm")
    assert pkg.licenses == ("MIT AND (BSD-3-Clause OR GPL-2.0-or-later)",)
    assert pkg.supplier == "Organization: pybuild tests"
    import hashlib
    files = {f.path: dict(f.checksums) for f in pkg.files}
    assert files == {
        "/etc/pbdemo.conf": {"SHA256": hashlib.sha256(b"conf\n").hexdigest()},
        "/usr/bin/pbdemo": {"SHA256": hashlib.sha256(b"hello\n").hexdigest()},
    }
    assert inv.warnings == ()

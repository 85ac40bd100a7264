"""Package URLs spelled as Syft writes them, and image purls as BuildKit writes them."""

from __future__ import annotations

import pytest

from pybuild.attest.purl import image_purl, purl
from pybuild.oci.platform import Platform


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (("deb", "curl", "7.74.0-1.3+deb11u7"), {"namespace": "debian",
     "qualifiers": {"arch": "amd64", "distro": "debian-11"}},
     "pkg:deb/debian/curl@7.74.0-1.3%2Bdeb11u7?arch=amd64&distro=debian-11"),
    (("deb", "p", "v"), {"namespace": "debian", "qualifiers": {"distro": "debian-11",
                                                                "upstream": "s@2.3"}},
     "pkg:deb/debian/p@v?distro=debian-11&upstream=s%402.3"),
    (("npm", "core", "1.6.0"), {"namespace": "@actions"}, "pkg:npm/%40actions/core@1.6.0"),
    (("golang", "errors", "v2.0.2+incompatible"), {"namespace": "github.com/pkg"},
     "pkg:golang/github.com/pkg/errors@v2.0.2%2Bincompatible"),
    (("maven", "antlr", "2.7.6"), {"namespace": "antlr"}, "pkg:maven/antlr/antlr@2.7.6"),
    (("pypi", "aiohttp", "3.7.4.post0"), {}, "pkg:pypi/aiohttp@3.7.4.post0"),
    (("rpm", "dbus", "1.12.8-12.el8"), {"namespace": "centos", "qualifiers": {
        "arch": "aarch64", "epoch": "1", "upstream": "dbus-1.12.8-12.el8.src.rpm",
        "distro": "centos-8", "empty": ""}},
     "pkg:rpm/centos/dbus@1.12.8-12.el8?arch=aarch64&distro=centos-8&epoch=1"
     "&upstream=dbus-1.12.8-12.el8.src.rpm"),
    (("deb", "a b", "1:2.0"), {}, "pkg:deb/a%20b@1%3A2.0"),
])
def test_syft_spelling(args: tuple[str, ...], kwargs: dict, expected: str) -> None:
    assert purl(*args, **kwargs) == expected


def test_image_purls_as_buildkit_materials() -> None:
    amd64 = Platform(os="linux", architecture="amd64")
    # frontend/dockerfile/dockerfile_provenance_test.go's expected base material
    assert image_purl("docker.io/library/busybox:latest", amd64) == (
        "pkg:docker/busybox@latest?platform=linux%2Famd64")
    assert image_purl("busybox") == "pkg:docker/busybox@latest"
    digest = "sha256:" + "a" * 64
    assert image_purl(f"localhost:5000/team/app@{digest}",
                      Platform(os="linux", architecture="arm64", variant="v8")) == (
        f"pkg:docker/localhost%3A5000/team/app?digest={digest}&platform=linux%2Farm64")
    assert image_purl(f"alpine:3.19@{digest}", kind="oci") == (
        f"pkg:oci/alpine@3.19?digest={digest}")

"""Java archives: Maven coordinates from pom.properties, nested jars, manifests, bombs."""

from __future__ import annotations

import io
import zipfile

from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.java import JavaArchiveScanner, read_archive
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, jar, maven_jar, tar_layer


def test_pom_properties_and_nested_jars() -> None:
    inner = maven_jar("org.slf4j", "slf4j-api", "2.0.9")
    outer = maven_jar("com.example", "app", "1.0.0",
                      extra={"BOOT-INF/lib/slf4j-api-2.0.9.jar": inner})
    layer = tar_layer([Entry("opt/app.jar", data=outer), Entry("opt/not-a.jar", data=b"text")])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]),
               scanners=[JavaArchiveScanner()])
    got = {(p.purl, p.location, p.licenses) for p in inv.packages}
    assert got == {
        ("pkg:maven/com.example/app@1.0.0", "/opt/app.jar", ("Apache-2.0",)),
        ("pkg:maven/org.slf4j/slf4j-api@2.0.9",
         "/opt/app.jar:BOOT-INF/lib/slf4j-api-2.0.9.jar", ("Apache-2.0",)),
    }


def test_manifest_fallback() -> None:
    data = jar({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\nBundle-SymbolicName: "
                b"org.example.bundle;singleton:=true\r\nBundle-Version: 3.2.1\r\n\r\n"})
    (artifact,) = read_archive(io.BytesIO(data))
    assert (artifact.group, artifact.artifact, artifact.version) == (
        "org.example.bundle", "org.example.bundle", "3.2.1")


def test_a_member_that_lies_about_its_size_is_not_read_whole() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/maven/g/a/pom.properties", b"x" * (4 << 20))  # a 4 MiB "bomb"
    assert read_archive(io.BytesIO(buf.getvalue())) == ()
    assert read_archive(io.BytesIO(b"PK\x03\x04garbage")) == ()

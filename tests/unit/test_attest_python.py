"""The Python scanner on real-format dist-info and egg-info metadata."""

from __future__ import annotations

import io

from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.python import PythonScanner, normalise
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, tar_layer

SITE = "usr/lib/python3/dist-packages"
SIX_METADATA = b"""\
Metadata-Version: 2.1
Name: six
Version: 1.16.0
Summary: Python 2 and 3 compatibility utilities
Home-page: https://github.com/benjaminp/six
Author: Benjamin Peterson
Author-email: benjamin@python.org
License: MIT
Platform: UNKNOWN
Classifier: Programming Language :: Python :: 2
Classifier: License :: OSI Approved :: MIT License
Requires-Python: >=2.7, !=3.0.*, !=3.1.*, !=3.2.*

.. image:: https://img.shields.io/pypi/v/six.svg
   :target: https://pypi.org/project/six/
"""
SIX_RECORD = b"""\
__pycache__/six.cpython-311.pyc,,
six-1.16.0.dist-info/INSTALLER,sha256=zuuue4knoyJ-UwPPXg8fezS7VCrXJQrAP7zeNuwvFQg,4
six-1.16.0.dist-info/METADATA,sha256=VQcGIFCAEmfZcl77E5riPCN4v2TIsc_qtacnjxKHJoI,1795
six-1.16.0.dist-info/RECORD,,
six.py,sha256=TOOfQi7nFGfMrIvtdr6wX4wyHH8M7aknmuLfo2cBBrM,34549
"""
YAML_METADATA = b"""\
Metadata-Version: 2.4
Name: PyYAML
Version: 6.0.2
License-Expression: MIT
Classifier: License :: OSI Approved :: MIT License
"""
EGG_PKG_INFO = b"""\
Metadata-Version: 1.1
Name: zope.interface
Version: 5.5.2
License: ZPL 2.1
"""


def _scan() -> dict:
    layer = tar_layer([
        Entry(f"{SITE}/six-1.16.0.dist-info/METADATA", data=SIX_METADATA),
        Entry(f"{SITE}/six-1.16.0.dist-info/RECORD", data=SIX_RECORD),
        Entry(f"{SITE}/six.py", data=b"# six\n"),
        Entry(f"{SITE}/PyYAML-6.0.2.dist-info/METADATA", data=YAML_METADATA),
        Entry(f"{SITE}/zope.interface-5.5.2.egg-info/PKG-INFO", data=EGG_PKG_INFO),
        Entry(f"{SITE}/zope.interface-5.5.2.egg-info/installed-files.txt",
              data=b"../zope/interface/__init__.py\nPKG-INFO\n"),
        Entry(f"{SITE}/python_apt-2.6.0.egg-info",
              data=b"Metadata-Version: 1.1\nName: python-apt\nVersion: 2.6.0\n"),
        Entry(f"{SITE}/broken-1.dist-info/METADATA", data=b"Name: broken\n"),  # no version
    ])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]),
               scanners=[PythonScanner()])
    return {p.name: p for p in inv.packages}


def test_dist_info_packages_and_purls() -> None:
    pkgs = _scan()
    assert set(pkgs) == {"six", "pyyaml", "zope-interface", "python-apt"}
    assert pkgs["six"].purl == "pkg:pypi/six@1.16.0"
    assert pkgs["pyyaml"].purl == "pkg:pypi/pyyaml@6.0.2"  # PEP 503 names, as Syft
    assert pkgs["six"].supplier == "Person: Benjamin Peterson (benjamin@python.org)"
    assert pkgs["six"].homepage == "https://github.com/benjaminp/six"
    assert pkgs["six"].location == f"/{SITE}/six-1.16.0.dist-info/METADATA"


def test_licences_expression_then_field_then_classifiers() -> None:
    pkgs = _scan()
    assert pkgs["pyyaml"].licenses == ("MIT",)
    assert pkgs["six"].licenses == ("MIT",)
    assert pkgs["zope-interface"].licenses == ("ZPL 2.1",)


def test_record_and_installed_files() -> None:
    pkgs = _scan()
    six = {f.path: dict(f.checksums) for f in pkgs["six"].files}
    assert six[f"/{SITE}/six.py"] == {
        "SHA256": "4ce39f422ee71467ccac8bed76beb05f8c321c7f0ceda9279ae2dfa3670106b3"}
    assert six[f"/{SITE}/__pycache__/six.cpython-311.pyc"] == {}
    assert [f.path for f in pkgs["zope-interface"].files] == [
        f"/{SITE}/zope.interface-5.5.2.egg-info/PKG-INFO", f"/{SITE}/zope/interface/__init__.py"]


def test_name_normalisation() -> None:
    assert normalise("Foo_Bar.baz") == "foo-bar-baz"

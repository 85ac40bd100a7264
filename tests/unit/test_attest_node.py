"""The npm scanner: installed package.json files, enriched by npm's lock files."""

from __future__ import annotations

import io
import json

from pybuild.attest.sbom.fsview import Layer, LayerStackView
from pybuild.attest.sbom.node import NpmScanner, integrity_checksums, is_package_root
from pybuild.attest.sbom.scan import scan
from testdata.make_attest_fixtures import Entry, tar_layer

MS = {"name": "ms", "version": "2.1.3", "description": "Tiny millisecond conversion utility",
      "repository": "vercel/ms", "main": "./index", "license": "MIT"}
TYPES = {"name": "@types/node", "version": "20.11.5", "license": "MIT",
         "author": {"name": "Microsoft", "email": "types@example.invalid"}}
LOCK = {
    "name": "app", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"dependencies": {"ms": "2.1.3"}},
        "node_modules/ms": {
            "version": "2.1.3",
            "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
            "integrity": ("sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6"
                          "/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="),
            "license": "MIT",
        },
        "node_modules/not-installed": {"version": "9.9.9"},
    },
}


def _scan() -> dict:
    layer = tar_layer([
        Entry("app/package.json", data=json.dumps({"dependencies": {"ms": "2.1.3"}}).encode()),
        Entry("app/package-lock.json", data=json.dumps(LOCK).encode()),
        Entry("app/node_modules/ms/package.json", data=json.dumps(MS).encode()),
        Entry("app/node_modules/@types/node/package.json", data=json.dumps(TYPES).encode()),
        Entry("app/node_modules/ms/test/fixture/package.json",
              data=b'{"name": "fixture", "version": "0.0.0"}'),  # not a package root
        Entry("app/node_modules/bad/package.json", data=b"{not json"),
    ])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]), scanners=[NpmScanner()])
    assert inv.warnings == ("/app/node_modules/bad/package.json: not valid JSON; skipped",)
    return {p.name: p for p in inv.packages}


def test_installed_packages_only() -> None:
    pkgs = _scan()
    assert set(pkgs) == {"ms", "@types/node"}  # not the lock-only or nested fixture ones
    assert pkgs["ms"].purl == "pkg:npm/ms@2.1.3"
    assert pkgs["@types/node"].purl == "pkg:npm/%40types/node@20.11.5"
    assert pkgs["@types/node"].supplier == "Person: Microsoft (types@example.invalid)"
    assert pkgs["ms"].licenses == ("MIT",)


def test_lock_file_adds_download_location_and_integrity() -> None:
    ms = _scan()["ms"]
    assert ms.download_location == "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz"
    ((algo, digest),) = ms.checksums
    assert algo == "SHA512" and len(digest) == 128


def test_package_roots_and_integrity_parsing() -> None:
    assert is_package_root("/a/node_modules/x/package.json")
    assert is_package_root("/a/node_modules/@s/x/package.json")
    assert not is_package_root("/a/node_modules/x/lib/package.json")
    assert not is_package_root("/a/node_modules/.bin/package.json")
    assert integrity_checksums("sha1-AAAA sha999-x") == (("SHA1", "000000"),)


def test_a_hostile_deeply_nested_manifest_is_skipped_with_a_warning() -> None:
    bomb = b'{"name": "x", "version": "1", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    layer = tar_layer([Entry("app/node_modules/x/package.json", data=bomb)])
    inv = scan(LayerStackView([Layer(open=lambda: io.BytesIO(layer))]), scanners=[NpmScanner()])
    assert inv.packages == () and "not valid JSON" in inv.warnings[0]

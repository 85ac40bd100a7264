"""The filesystem views the SBOM scan reads: layer stacks (whiteouts, overwrites, hostile
names, digests) and directories (no symlink is ever followed out of the root)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pybuild.attest.sbom.fsview import (
    DirectoryView,
    FileEntry,
    Layer,
    LayerStackView,
    Tree,
    Wanted,
    normalise,
)
from pybuild.digest import Digest
from pybuild.errors import IntegrityError, UserError
from testdata.make_attest_fixtures import Entry, tar_layer


def _layers(*blobs: bytes, digests: bool = True) -> LayerStackView:
    return LayerStackView([
        Layer(open=lambda b=b: io.BytesIO(b), digest=str(Digest.from_bytes(b)) if digests else "")
        for b in blobs
    ])


def _read_all(entry: FileEntry) -> Wanted | None:
    return Wanted(analyze=lambda f: f.read()) if entry.kind == "file" else None


def _tree(view: LayerStackView | DirectoryView) -> Tree:
    return Tree.collect(view, _read_all)


def test_later_layers_overwrite_and_whiteouts_remove() -> None:
    base = tar_layer([Entry("etc", "dir"), Entry("etc/a", data=b"one"), Entry("etc/b", data=b"b"),
                      Entry("var/lib/x/f", data=b"deep"), Entry("keep", data=b"k")])
    top = tar_layer([Entry("etc/a", data=b"two"), Entry("etc/b", "whiteout"),
                     Entry("var/lib", "whiteout"), Entry("new", data=b"n")])
    tree = _tree(_layers(base, top))
    assert tree.results["/etc/a"] == b"two"
    assert "/etc/b" not in tree.entries
    assert not any(p.startswith("/var/lib") for p in tree.entries)
    assert "/var" in tree.entries  # only the whited-out subtree went
    assert tree.results["/keep"] == b"k" and tree.results["/new"] == b"n"
    assert tree.entries["/new"].layer == str(Digest.from_bytes(top))


def test_opaque_directory_hides_only_lower_layers() -> None:
    base = tar_layer([Entry("d/old", data=b"old"), Entry("d/sub/x", data=b"x")])
    top = tar_layer([Entry("d/fresh", data=b"f"), Entry("d", "opaque"),
                     Entry("d/later", data=b"l")])
    tree = _tree(_layers(base, top))
    assert sorted(p for p in tree.entries if p.startswith("/d/")) == ["/d/fresh", "/d/later"]


def test_a_file_replacing_a_directory_removes_its_children() -> None:
    base = tar_layer([Entry("x/inner", data=b"i")])
    top = tar_layer([Entry("x", data=b"now a file")])
    tree = _tree(_layers(base, top))
    assert tree.entries["/x"].kind == "file" and "/x/inner" not in tree.entries
    again = tar_layer([Entry("x/inner2", data=b"j")])  # and a path under a file: a dir again
    tree = _tree(_layers(base, top, again))
    assert tree.entries["/x"].kind == "dir" and tree.results["/x/inner2"] == b"j"


def test_hard_links_share_the_analysis_and_dangling_ones_are_skipped() -> None:
    layer = tar_layer([Entry("bin/tool", data=b"\x7fELF...", mode=0o755),
                       Entry("bin/alias", "hardlink", link="bin/tool"),
                       Entry("bin/broken", "hardlink", link="nowhere")])
    tree = _tree(_layers(layer))
    assert tree.results["/bin/alias"] == b"\x7fELF..."
    assert tree.entries["/bin/alias"].size == len(b"\x7fELF...")
    assert "/bin/broken" not in tree.entries


def test_hostile_names_stay_inside_the_root() -> None:
    layer = tar_layer([Entry("../../etc/passwd", data=b"inside"), Entry("./a/../b", data=b"b")])
    tree = _tree(_layers(layer))
    assert tree.results["/etc/passwd"] == b"inside"
    assert tree.results["/b"] == b"b"
    assert normalise("/../..") == "/" and normalise("a//b/./c") == "/a/b/c"


def test_gzip_layers_and_digest_checks() -> None:
    blob = tar_layer([Entry("f", data=b"z")], compress=True)
    assert _tree(_layers(blob)).results["/f"] == b"z"
    bad = LayerStackView([Layer(open=lambda: io.BytesIO(blob), digest="sha256:" + "0" * 64,
                                name="layer 0")])
    with pytest.raises(IntegrityError, match="layer 0: digest mismatch"):
        _tree(bad)


def test_a_corrupt_layer_is_a_user_error_naming_it() -> None:
    view = LayerStackView([Layer(open=lambda: io.BytesIO(b"x" * 1024), name="layer 3")])
    with pytest.raises(UserError, match="layer 3"):
        _tree(view)


def test_magic_and_limit_filter_what_is_analysed() -> None:
    layer = tar_layer([Entry("bin/elf", data=b"\x7fELF" + b"\0" * 60, mode=0o755),
                       Entry("bin/script", data=b"#!/bin/sh\n", mode=0o755),
                       Entry("big", data=b"\x7fELF" + b"\0" * 5000)])
    calls: list[int] = []

    def select(entry: FileEntry) -> Wanted | None:
        if entry.kind != "file":
            return None
        return Wanted(analyze=lambda f: calls.append(len(f.read())) or "seen",
                      magic=b"\x7fELF", limit=1000)

    tree = Tree.collect(_layers(layer), select)
    assert set(tree.results) == {"/bin/elf"} and calls == [64]


def test_symlinks_resolve_inside_the_tree() -> None:
    layer = tar_layer([Entry("usr/lib/os-release", data=b"ID=debian\n"),
                       Entry("etc/os-release", "symlink", link="../usr/lib/os-release"),
                       Entry("lib", "symlink", link="usr/lib"),
                       Entry("loop", "symlink", link="loop"),
                       Entry("escape", "symlink", link="../../../../usr/lib")])
    tree = _tree(_layers(layer))
    assert tree.result("/etc/os-release") == b"ID=debian\n"
    assert tree.resolve("/lib/os-release") == "/usr/lib/os-release"
    assert tree.resolve("/escape/os-release") == "/usr/lib/os-release"  # clamped at the root
    assert tree.resolve("/loop") is None


def test_directory_view_matches_the_layer_view(tmp_path: Path) -> None:
    entries = [Entry("etc", "dir"), Entry("etc/a", data=b"one"), Entry("bin", "dir"),
               Entry("bin/sh", data=b"\x7fELF", mode=0o755), Entry("etc/l", "symlink", link="a")]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "a").write_bytes(b"one")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_bytes(b"\x7fELF")
    (tmp_path / "bin" / "sh").chmod(0o755)
    os.symlink("a", tmp_path / "etc" / "l")
    from_dir = _tree(DirectoryView(tmp_path))
    from_layers = _tree(_layers(tar_layer(entries)))
    assert from_dir.results == from_layers.results
    assert {p: (e.kind, e.link) for p, e in from_dir.entries.items()} == {
        p: (e.kind, e.link) for p, e in from_layers.entries.items()}


def test_directory_view_never_reads_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host file")
    root = tmp_path / "root"
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    os.symlink(outside / "secret", root / "var" / "lib" / "dpkg" / "status")
    os.symlink(outside, root / "data")
    tree = _tree(DirectoryView(root))
    assert tree.entries["/var/lib/dpkg/status"].kind == "symlink"
    assert b"host file" not in tree.results.values()
    assert "/data/secret" not in tree.entries


def test_directory_view_of_a_missing_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot scan"):
        _tree(DirectoryView(tmp_path / "nope"))


def test_very_deep_trees_neither_recurse_nor_exhaust_descriptors(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 3000)
    layer = tar_layer([Entry(f"{deep}/f", data=b"x"), Entry("l", "symlink", link=deep)])
    tree = _tree(_layers(layer))
    assert tree.result("/l/f") == b"x" and tree.resolve(f"/{deep}/f") == f"/{deep}/f"
    path = tmp_path
    for _ in range(300):  # deeper than MAX_DEPTH: walked down to the bound, then not
        path = path / "d"
        path.mkdir()
        os.chmod(path, 0o755)
    entries = _tree(DirectoryView(tmp_path)).entries
    from pybuild.attest.sbom.fsview import MAX_DEPTH

    assert max(p.count("/") for p in entries) == MAX_DEPTH

"""Bad input: one clear error naming the file, line and instruction; the store survives."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import run_pybuild


def _ctx(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).write_text(text)
    return ctx


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err


def test_missing_dockerfile(fresh_root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "empty"
    ctx.mkdir()
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "Dockerfile not found" in r.err and str(ctx) in r.err
    _no_traceback(r.err)


def test_unknown_instruction_names_line_and_suggests(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nRUN true\nFNTRYPOINT [\"sh\"]\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "Dockerfile:3" in r.err
    assert "unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)" in r.err
    assert 'FNTRYPOINT ["sh"]' in r.err  # the offending line is shown
    _no_traceback(r.err)


def test_missing_copy_source(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nCOPY nothere.txt /x\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "Dockerfile:2" in r.err and "COPY" in r.err and "nothere.txt" in r.err
    assert "not found" in r.err
    _no_traceback(r.err)


def test_copy_source_excluded_by_dockerignore(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nCOPY secret.txt /x\n",
               {"secret.txt": "s", ".dockerignore": "secret.txt\n"})
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "excluded by .dockerignore" in r.err
    _no_traceback(r.err)


def test_unknown_base_image(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM alpine:3.20\nRUN true\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "Dockerfile:1" in r.err and "FROM" in r.err
    assert "alpine:3.20 is not in the local image store" in r.err
    _no_traceback(r.err)


def test_failing_run_reports_exit_code_line_and_output(fresh_root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nRUN echo first-line && echo to-stderr >&2 && exit 3\n")
    r = run_pybuild(fresh_root, "build", "--progress", "plain", str(ctx))
    assert r.code == 1
    assert "Dockerfile:2" in r.err and "exit code: 3" in r.err
    assert "first-line" in r.err and "to-stderr" in r.err
    _no_traceback(r.err)


def test_corrupt_blob_is_named_and_store_stays_usable(fresh_root: Path, tmp_path: Path) -> None:
    from pybuild.content.walk import read_manifest, resolve_platform
    from pybuild.oci.platform import host
    from pybuild.root import Root

    stores = Root(fresh_root)
    desc = resolve_platform(stores.content, stores.images.get("busybox").descriptor, host())
    layer = read_manifest(stores.content, desc).layers[0]
    path = stores.content.blob_path(layer.digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    out = tmp_path / "bb.tar"
    r = run_pybuild(fresh_root, "export", "busybox", "-o", f"type=oci,dest={out}")
    assert r.code == 1
    assert layer.digest in r.err and ("corrupt" in r.err or "mismatch" in r.err)
    _no_traceback(r.err)
    listing = run_pybuild(fresh_root, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert listing.code == 0 and "busybox:latest" in listing.out


def test_root_under_a_private_directory_is_refused_clearly(tmp_path: Path) -> None:
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("only builds run by root shift their steps to another id")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    ctx = _ctx(tmp_path, "FROM scratch\nENV A=1\n")
    r = run_pybuild(private / "root", "build", str(ctx))
    assert r.code == 1
    assert "other users cannot enter" in r.err and str(private) in r.err
    _no_traceback(r.err)


def test_copy_of_a_whiteout_named_file_is_refused(fresh_root: Path, tmp_path: Path) -> None:
    # A layer cannot hold a file named .wh.*: readers take it for a deletion marker.
    ctx = _ctx(tmp_path, "FROM busybox\nCOPY dir /d\n")
    (ctx / "dir").mkdir()
    (ctx / "dir" / "keep").write_text("k")
    (ctx / "dir" / ".wh.keep").write_text("w")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 1
    assert "Dockerfile:2" in r.err and "COPY" in r.err and "dir/.wh.keep" in r.err
    _no_traceback(r.err)
    # A bind mount is no layer: there both files are plain files.
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=bind,source=dir,target=/m "
        "test -f /m/keep && test -f /m/.wh.keep\n")
    r = run_pybuild(fresh_root, "build", str(ctx))
    assert r.code == 0, r.err

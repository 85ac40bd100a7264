"""Hostile images: whatever a layer says, nothing outside the snapshot or the export is
written, chmodded, chowned, utimed or read (issue 9: F1, F7, F12; F3 as an expected failure).

The layouts are crafted byte by byte (tests/hostile_layouts.py) on top of the busybox
test image, loaded with `pybuild load` and pushed through every path that applies layers:
the sandbox's snapshot unpack (`build` of `FROM evil` + `RUN true`), `build -o
type=local`, `build -o type=tar`, `export -o type=local` and `export -o type=tar`; as
root and as the unprivileged `pbtester`. Around each run sit victim directories with
known modes, owners and mtimes (owned by root, by the id a root build's namespace root
maps to, and by pbtester) and victim files whose content is a secret: afterwards the
victims are stat-for-stat what they were, no name a layer chose exists on the host
outside the destinations, and no secret appears in any output.

- ALLOWED: tricks a correct applier contains (absolute names, symlinks out, a parent
  replaced after its children, devices, set-id files, capabilities, duplicates), one
  layer each in one image, so every path runs once for all of them; each has a check of
  what lands where (type=local leaves out devices, set-id bits and capabilities).
- REFUSED: layers every path must refuse with one clean `error:` line (exit 1, no
  traceback), leaving no destination and no half-written snapshot behind.
- A decompression bomb, a config lying about a diff_id, full disks (export and sandbox
  unpack), and F3 (other users and root's snapshots), as their own tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pybuild.builder.executor.idmap import detect as detect_idmap
from tests import hostile_layouts as hl
from tests.integration.conftest import Run, rootless_root, run_pybuild, traversable_dir

USER = "pbtester"
EPOCH_NS = 1_234_567_890 * 1_000_000_000
BOMB_SIZE = 320 << 20  # past the 256 MiB floor of the default expansion limits


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"test user {USER} is missing: scripts/setup.sh creates it")
        pytest.skip(f"test user {USER} does not exist (run scripts/setup.sh as root)")


def _root_build_uid() -> int:
    """The host uid a root build's namespace root runs as (its snapshots' owner)."""
    (first,) = [e for e in detect_idmap().uid_extents if e.inside == 0]
    return first.outside


pytestmark = pytest.mark.requires("root", "userns", "crun")


# -- the world around a run: victims, secrets, a scratch dir ------------------------------------


@dataclass
class World:
    work: Path  # scratch dir, traversable; owned by the user the case runs as
    token: str  # part of every name a hostile layer chooses
    victims: dict[str, Path] = field(default_factory=dict)  # label -> directory
    secrets: dict[str, bytes] = field(default_factory=dict)  # label -> content of its file

    def victim_file(self, label: str) -> Path:
        return self.victims[label] / "sub" / "file"


def _make_victims(world: World) -> None:
    base = world.work.parent / f"victims-{world.work.name}"
    base.mkdir(mode=0o755)
    owners = {"root": (0, 0), "id": (_root_build_uid(),) * 2,
              "user": (_user().pw_uid, _user().pw_gid)}
    for label, (uid, gid) in owners.items():
        v = base / label
        (v / "sub").mkdir(parents=True)
        secret = f"SECRET-{world.token}-{label}".encode()
        (v / "sub" / "file").write_bytes(secret)
        for p, mode in ((v / "sub" / "file", 0o600), (v / "sub", 0o700), (v, 0o700)):
            os.chown(p, uid, gid)
            os.chmod(p, mode)
            os.utime(p, ns=(EPOCH_NS, EPOCH_NS))
        world.victims[label] = v
        world.secrets[label] = secret


def _state(world: World) -> dict[str, tuple[object, ...]]:
    """Everything an escape could change about the victims (atime aside)."""
    out: dict[str, tuple[object, ...]] = {}
    for label, v in world.victims.items():
        for p in [v.parent, v, *sorted(v.rglob("*"))]:
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            out[f"{label}:{p}"] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                   st.st_nlink, st.st_size, digest,
                                   tuple(sorted(os.listxattr(p, follow_symlinks=False))))
    return out


def _host_leaks(world: World) -> list[str]:
    """Names the layers chose (they all carry the token) that exist outside the outputs."""
    found = []
    for top in ("/", "/tmp", "/var/tmp", "/root", "/etc", str(world.work.parent)):
        with contextlib.suppress(OSError):
            found += [os.path.join(top, n) for n in os.listdir(top) if world.token in n]
    for v in world.victims.values():
        found += [str(p) for p in v.rglob(f"*{world.token}*")]
    return found


def _files_under(path: Path) -> Iterator[Path]:
    if not path.exists():
        return
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            yield Path(dirpath) / name


def _secret_leaks(world: World, places: list[Path]) -> list[str]:
    """Outputs (dirs, tars) that contain a victim's secret: something read outside."""
    leaks = []
    for place in places:
        paths = [place] if place.is_file() else list(_files_under(place))
        for p in paths:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(p.lstat().st_mode):
                    data = p.read_bytes()
                    leaks += [f"{p}: {label}" for label, s in world.secrets.items() if s in data]
    return leaks


# -- pybuild roots ------------------------------------------------------------------------------


@dataclass
class Side:
    """One user's pybuild root and how to run pybuild as that user."""

    user: str | None  # None: root
    root: Path
    base: Path  # the dir work dirs are made in

    def run(self, *args: str) -> Run:
        return run_pybuild(self.root, *args, user=self.user, timeout=600)

    def new_work(self, token: str) -> Path:
        work = self.base / f"work-{uuid.uuid4().hex[:10]}"
        work.mkdir(mode=0o755)
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(work, pw.pw_uid, pw.pw_gid)
        return work

    def hand_over(self, path: Path) -> None:
        if self.user is None:
            return
        pw = pwd.getpwnam(self.user)
        for p in [path, *path.rglob("*")]:
            os.lchown(p, pw.pw_uid, pw.pw_gid)


@pytest.fixture(scope="module")
def root_side(base_layout: Path) -> Iterator[Side]:
    base = traversable_dir("pybuild-hostile-")
    root = base / "root"
    r = run_pybuild(root, "load", "-i", str(base_layout), "-t", "busybox:latest")
    assert r.code == 0, r.err
    yield Side(None, root, base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def user_side(base_layout: Path) -> Iterator[Side]:
    _user()
    base = traversable_dir("pybuild-hostile-user-")
    root = rootless_root(base, USER, base_layout)
    yield Side(USER, root, base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["root", USER])
def side(request: pytest.FixtureRequest) -> Side:
    name = "root_side" if request.param == "root" else "user_side"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


# -- running one hostile image through every path -------------------------------------------------


@dataclass
class Outputs:
    runs: dict[str, Run]
    dests: dict[str, Path]
    image: str
    # Snapshot dirs holding hostile entries right after the sandbox run: only a failed
    # unpack that did not clean up leaves one. (Checked then: a later FROM-only build
    # that exits while the daemon's prefetch still unpacks can leave a `.tmp-` dir of
    # its own, a daemon matter outside apply.)
    half_written: list[Path] = field(default_factory=list)


PATHS = ("sandbox", "build-local", "build-tar", "export-local", "export-tar")


def _clean(run: Run, what: str) -> None:
    text = run.out + run.err
    assert "Traceback" not in text and "internal error" not in text, f"{what}:\n{text}"
    assert run.code in (0, 1), f"{what}: exit {run.code}\n{text}"


def _through_every_path(side: Side, world: World, layers: list[hl.Blob], *,
                        diff_ids: list[str] | None = None, base: Path | None,
                        paths: tuple[str, ...] = PATHS) -> Outputs:
    name = f"evil-{world.token}:1"
    layout = world.work / "layout"
    hl.write_layout(layout, layers, base=base, diff_ids=diff_ids)
    ctx_run, ctx_from = world.work / "ctx-run", world.work / "ctx-from"
    ctx_run.mkdir()
    ctx_from.mkdir()
    (ctx_run / "Dockerfile").write_text(f"FROM {name}\nRUN true\n")
    (ctx_from / "Dockerfile").write_text(f"FROM {name}\n")
    side.hand_over(world.work)
    w = world.work
    dests = {"build-local": w / "b-local", "build-tar": w / "b.tar",
             "export-local": w / "e-local", "export-tar": w / "e.tar"}
    commands = {
        "sandbox": ("build", "--progress", "plain", str(ctx_run)),
        "build-local": ("build", "--progress", "plain", "-o",
                        f"type=local,dest={dests['build-local']}", str(ctx_from)),
        "build-tar": ("build", "--progress", "plain", "-o",
                      f"type=tar,dest={dests['build-tar']}", str(ctx_from)),
        "export-local": ("export", name, "-o", f"type=local,dest={dests['export-local']}"),
        "export-tar": ("export", name, "-o", f"type=tar,dest={dests['export-tar']}"),
    }
    out = Outputs({"load": side.run("load", "-i", str(layout), "-t", name)},
                  {k: v for k, v in dests.items() if k in paths}, name)
    _clean(out.runs["load"], "load")
    if out.runs["load"].code != 0:
        return out
    snaps = side.root / "sandbox" / "snapshots"
    for what in paths:
        out.runs[what] = side.run(*commands[what])
        _clean(out.runs[what], what)
        if what == "sandbox" and snaps.exists():
            out.half_written = [p for p in snaps.iterdir() if (p / "hostile").exists()
                                and ".tmp-" in p.name]
    return out


def _tar_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as t:
        return {m.name: m for m in t.getmembers()}


LOCALS = ("build-local", "export-local")
LABELS = ("root", "id", "user")


def _privileged_export(side: Side, world: World, out: Outputs) -> Path:
    """As root, once: `export -o type=local,privileged-files=true` (the faithful rootfs)."""
    priv = world.work / "p-local"
    if not priv.exists():
        r = side.run("export", out.image, "-o", f"type=local,dest={priv},privileged-files=true")
        assert r.code == 0, r.err
    return priv


# Cases a correct applier accepts: each is one layer under hostile/<case>/, all stacked in
# one image (so each path runs once for all of them), each with its own check.
Check = Callable[[Side, World, Outputs, str], None]


@dataclass(frozen=True)
class Allowed:
    entries: Callable[[World, str], list[hl.Entry]]  # (world, prefix) -> the layer
    check: Check | None = None


def _check_inside(rel: Callable[[World, str], list[str]]) -> Check:
    """The entries land inside the destination (where a symlink points, read as /)."""

    def check(side: Side, world: World, out: Outputs, p: str) -> None:
        for key in LOCALS:
            for r in rel(world, p):
                assert (out.dests[key] / r.lstrip("/")).exists(), (key, r)
    return check


def _check_symlinks_kept(side: Side, world: World, out: Outputs, p: str) -> None:
    members = _tar_members(out.dests["export-tar"])
    assert members[f"{p}/s"].issym() and members[f"{p}/f"].isreg()
    for key in LOCALS:
        assert (out.dests[key] / p / "f").read_bytes() == b"overwritten"
        assert os.readlink(out.dests[key] / p / "s") == str(world.victim_file("root"))


def _check_devices(side: Side, world: World, out: Outputs, p: str) -> None:
    for key in LOCALS:
        dest = out.dests[key] / p
        assert not os.path.lexists(dest / "mem") and not os.path.lexists(dest / "disk")
        assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)
        assert "did not write 2 device node(s)" in out.runs[key].err
    if side.user is None:
        members = _tar_members(out.dests["export-tar"])
        assert members[f"{p}/mem"].ischr() and members[f"{p}/disk"].isblk()
        st = (_privileged_export(side, world, out) / p / "mem").lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 1)


def _check_setid(side: Side, world: World, out: Outputs, p: str) -> None:
    for key in LOCALS:
        dest = out.dests[key] / p
        assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o755
        assert stat.S_IMODE((dest / "sgid").stat().st_mode) == 0o755
        assert stat.S_IMODE((dest / "sgid-dir").stat().st_mode) == 0o2775
        assert "the set-uid/set-gid bits of 2 file(s)" in out.runs[key].err
    members = _tar_members(out.dests["export-tar"])
    assert members[f"{p}/suid"].mode == 0o4755  # a tar grants nothing by itself
    if side.user is None:
        priv = _privileged_export(side, world, out)
        assert stat.S_IMODE((priv / p / "suid").stat().st_mode) == 0o4755


def _check_capability(side: Side, world: World, out: Outputs, p: str) -> None:
    for key in LOCALS:
        assert "security.capability" not in os.listxattr(out.dests[key] / p / "cap")
    if side.user is None:
        assert "the file capabilities of 1 file(s)" in out.runs["export-local"].err
        pax = _tar_members(out.dests["export-tar"])[f"{p}/cap"].pax_headers
        assert "SCHILY.xattr.security.capability" in pax
        priv = _privileged_export(side, world, out)
        assert os.getxattr(priv / p / "cap", "security.capability") == hl.CAP_SETUID


def _check_duplicates(side: Side, world: World, out: Outputs, p: str) -> None:
    for key in LOCALS:
        assert (out.dests[key] / p / "dup").read_bytes() == b"3"
        assert stat.S_IMODE((out.dests[key] / p / "dd").stat().st_mode) == 0o751


ALLOWED: dict[str, Allowed] = {
    "symlink-escape": Allowed(
        lambda w, p: [e for lb in LABELS for e in (
            hl.sym(f"{p}/esc-{lb}", str(w.victims[lb])),
            hl.d(f"{p}/esc-{lb}/sub", 0o777, 0),
            hl.f(f"{p}/esc-{lb}/sub/{w.token}-esc", b"through"),
            hl.f(f"{p}/esc-{lb}/sub/file", b"overwritten"),
            hl.f(f"{p}/esc-{lb}/sub/.wh.file"),
            hl.f(f"{p}/esc-{lb}/.wh..wh..opq"),
        )],
        _check_inside(lambda w, p: [f"{w.victims[lb]}/sub/{w.token}-esc" for lb in LABELS]),
    ),
    "absolute-names": Allowed(  # after symlink-escape, whose opaque clears that dir
        lambda w, p: [hl.d(f"{w.victims[lb]}/sub", 0o777, 0) for lb in LABELS]
        + [hl.f(f"{w.victims[lb]}/sub/{w.token}", b"abs") for lb in LABELS],
        _check_inside(lambda w, p: [f"{w.victims[lb]}/sub/{w.token}" for lb in LABELS]),
    ),
    "parent-replaced-after-children": Allowed(  # F1
        lambda w, p: [e for lb in LABELS for e in (
            hl.d(f"{p}/{lb}"),
            hl.d(f"{p}/{lb}/sub", 0o777, 0),
            hl.sym(f"{p}/{lb}", str(w.victims[lb])),
        )] + [hl.d(f"{p}/deep/a/b/c", 0o777, 0),
              hl.sym(f"{p}/deep/a", str(w.victims["id"])),
              hl.sym(f"{p}/deep", str(w.victims["root"].parent))],
    ),
    "symlink-then-file": Allowed(
        lambda w, p: [hl.sym(f"{p}/f", str(w.victim_file("root"))),
                      hl.f(f"{p}/f", b"overwritten"),
                      hl.sym(f"{p}/s", str(w.victim_file("root")))],
        _check_symlinks_kept,
    ),
    "devices": Allowed(
        lambda w, p: [hl.Entry(f"{p}/mem", hl.CHR, mode=0o666, dev=(1, 1)),
                      hl.Entry(f"{p}/disk", hl.BLK, mode=0o666, dev=(7, 0)),
                      hl.Entry(f"{p}/fifo", hl.FIFO, mode=0o666)],
        _check_devices,
    ),
    "set-id": Allowed(
        lambda w, p: [hl.f(f"{p}/suid", b"#!/bin/sh\nid\n", 0o4755),
                      hl.f(f"{p}/sgid", b"#!/bin/sh\nid\n", 0o2755),
                      hl.d(f"{p}/sgid-dir", 0o2775)],
        _check_setid,
    ),
    "capability": Allowed(
        lambda w, p: [hl.f(f"{p}/cap", b"\x7fELF", 0o755,
                           xattrs={"security.capability": hl.CAP_SETUID})],
        _check_capability,
    ),
    "duplicates": Allowed(
        lambda w, p: [hl.f(f"{p}/dup", b"1"), hl.f(f"{p}/dup", b"2"), hl.d(f"{p}/dup"),
                      hl.f(f"{p}/dup/x", b"x"), hl.f(f"{p}/dup", b"3"),
                      hl.d(f"{p}/dd", 0o700), hl.d(f"{p}/dd", 0o751)],
        _check_duplicates,
    ),
}

# Layers a correct applier refuses, on every path, with this error (one layer each).
REFUSED: dict[str, tuple[Callable[[World], list[hl.Entry]], str]] = {
    "dotdot": (lambda w: [hl.f("hostile/ok", b"1"),
                          hl.f(f"{'../' * 12}{w.victim_file('root').parent}/{w.token}")],
               r"escapes the layer root"),
    "hardlink-through-symlink": (
        lambda w: [hl.sym("hostile/esc", "/"),
                   hl.hard("hostile/l", f"hostile/esc{w.victim_file('root')}")],
        r"target is not a file earlier in this layer"),
    "hardlink-absolute": (lambda w: [hl.hard("hostile/l", str(w.victim_file("id")))],
                          r"target is not a file earlier in this layer"),
    "hardlink-dotdot": (lambda w: [hl.hard("hostile/l", f"{'../' * 12}{w.victim_file('user')}")],
                        r"escapes the layer root"),
    "long-name": (lambda w: [hl.f("hostile/" + "n" * 5000, b"x")],
                  r"cannot write 'hostile/n+'\.\.\. \(5008 bytes\).*File name too long"),
}


@contextlib.contextmanager
def _world(side: Side) -> Iterator[World]:
    world = World(side.new_work(""), f"pwn{uuid.uuid4().hex[:10]}")
    try:
        _make_victims(world)
        yield world
    finally:
        shutil.rmtree(world.work, ignore_errors=True)
        shutil.rmtree(world.work.parent / f"victims-{world.work.name}", ignore_errors=True)


def _nothing_escaped(side: Side, world: World, out: Outputs,
                     before: dict[str, tuple[object, ...]]) -> None:
    assert _state(world) == before
    assert _host_leaks(world) == []
    places = [*out.dests.values(), world.work / "p-local", side.root / "sandbox"]
    assert _secret_leaks(world, places) == []
    for p in world.work.rglob(".pybuild-*"):
        raise AssertionError(f"scratch left behind: {p}")


def test_hostile_layers_are_applied_inside(side: Side, base_layout: Path) -> None:
    with _world(side) as world:
        before = _state(world)
        layers = [hl.layer(case.entries(world, f"hostile/{name}"))
                  for name, case in ALLOWED.items()]
        out = _through_every_path(side, world, layers, base=base_layout)
        for what, run in out.runs.items():
            assert run.code == 0, f"{what}: {run.err}"
        for name, case in ALLOWED.items():
            if case.check is not None:
                case.check(side, world, out, f"hostile/{name}")
        _nothing_escaped(side, world, out, before)


def _refused_everywhere(side: Side, world: World, out: Outputs, pattern: str) -> None:
    assert out.runs["load"].code == 0, out.runs["load"].err
    for what, run in out.runs.items():
        if what == "load":
            continue
        errors = [line for line in run.err.splitlines() if line.startswith("error: ")]
        assert run.code == 1 and len(errors) == 1, f"{what}: {run.err}"
        assert re.search(pattern, errors[0]), f"{what}: {errors[0]}"
    for dest in out.dests.values():
        assert not os.path.lexists(dest), f"{dest} was left behind"
    assert out.half_written == []  # the failed unpack removed its snapshot-to-be


@pytest.mark.parametrize("case", list(REFUSED))
def test_hostile_layer_is_refused(case: str, side: Side, base_layout: Path) -> None:
    entries, pattern = REFUSED[case]
    with _world(side) as world:
        before = _state(world)
        out = _through_every_path(side, world, [hl.layer(entries(world))], base=base_layout)
        _refused_everywhere(side, world, out, pattern)
        _nothing_escaped(side, world, out, before)


def test_decompression_bomb_is_refused(side: Side, base_layout: Path) -> None:
    """320 MiB of zeros in a 320 KB gzip layer (F12): stopped by the default limits on
    the sandbox and export paths (each unpacks 256 MiB before it trips)."""
    with _world(side) as world:
        before = _state(world)
        paths = ("sandbox", "export-local", "export-tar") if side.user is None else ("sandbox",)
        out = _through_every_path(side, world, [hl.bomb("hostile/zeros", BOMB_SIZE)],
                                  base=base_layout, paths=paths)
        _refused_everywhere(side, world, out, r"is a decompression bomb")
        _nothing_escaped(side, world, out, before)


def test_read_only_dirs_of_a_lower_layer_can_be_removed(side: Side, base_layout: Path) -> None:
    """A later layer deletes or replaces an earlier layer's 0555/0500 directories: fine
    for an unprivileged user too (the applier opens them up; it owns that tree)."""
    with _world(side) as world:
        lower = hl.layer([hl.d("hostile/ro", 0o555), hl.f("hostile/ro/f", b"f"),
                          hl.d("hostile/ro/inner", 0o555), hl.f("hostile/ro/inner/g", b"g"),
                          hl.d("hostile/ro2", 0o500), hl.f("hostile/ro2/x", b"x"),
                          hl.d("rotop", 0o555), hl.f("rotop/k", b"k")])
        upper = hl.layer([hl.f("hostile/.wh.ro"), hl.f("hostile/ro2", b"now a file")])
        out = _through_every_path(side, world, [lower, upper], base=base_layout,
                                  paths=("sandbox", "export-local", "export-tar"))
        for what, run in out.runs.items():
            assert run.code == 0, f"{what}: {run.err}"
        local = out.dests["export-local"] / "hostile"
        assert not os.path.lexists(local / "ro")
        assert (local / "ro2").read_bytes() == b"now a file"
        # Moved out of the staging dir into place although a non-root user cannot
        # normally move a directory it may not write; its mode and mtime as the image says.
        st = (out.dests["export-local"] / "rotop").stat()
        assert stat.S_IMODE(st.st_mode) == 0o555 and st.st_mtime == 1_700_000_000
        names = set(_tar_members(out.dests["export-tar"]))
        assert "hostile/ro2" in names and not any(n.startswith("hostile/ro/") for n in names)


def test_export_over_an_earlier_hostile_export(side: Side, base_layout: Path) -> None:
    """`type=local` writes over what is there: symlinks a first image left in the
    destination are replaced, never written through, by a second image's directories."""
    with _world(side) as world:
        before = _state(world)
        first = [hl.sym("hostile/x", str(world.victims["root"])),
                 hl.sym("top", str(world.victims["id"])),
                 hl.sym("mine", str(world.victims["user"])),
                 hl.d("ro", 0o555), hl.f("ro/a", b"a")]
        second = [hl.d("ro", 0o555), hl.f("ro/b", b"b"),
                  hl.d("hostile/x/sub", 0o777, 0), hl.f("hostile/x/new", b"b"),
                  hl.d("top/sub", 0o777, 0), hl.f("top/sub/file", b"b"),
                  hl.f("mine", b"a file now")]
        dest = world.work / "out"
        (dest / "kept").mkdir(parents=True)
        (dest / "kept" / "user-file").write_bytes(b"the user's")
        for n, entries in enumerate((first, second)):
            hl.write_layout(world.work / f"layout{n}", [hl.layer(entries)])
            side.hand_over(world.work)
            image = f"over{n}-{world.token}:1"
            r = side.run("load", "-i", str(world.work / f"layout{n}"), "-t", image)
            assert r.code == 0, r.err
            r = side.run("export", image, "-o", f"type=local,dest={dest}")
            assert r.code == 0, r.err
        assert (dest / "hostile" / "x").is_dir() and not (dest / "hostile" / "x").is_symlink()
        assert stat.S_IMODE((dest / "hostile" / "x" / "sub").stat().st_mode) == 0o777
        assert (dest / "top" / "sub" / "file").read_bytes() == b"b"
        assert (dest / "mine").read_bytes() == b"a file now"
        assert (dest / "kept" / "user-file").read_bytes() == b"the user's"
        assert sorted(os.listdir(dest / "ro")) == ["a", "b"]  # merged into a 0555 dir
        assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
        assert _state(world) == before
        assert _host_leaks(world) == []


def test_diff_id_lie_is_a_clean_error_or_a_clean_refusal(base_layout: Path) -> None:
    """A config whose diff_id is not its layer's: every path succeeds or fails cleanly
    (the snapshot side of F2 is fixed elsewhere), and a refused export leaves nothing.
    Its own root: a lie must not reach the other cases' snapshots."""
    base = traversable_dir("pybuild-hostile-lie-")
    try:
        root = base / "root"
        assert run_pybuild(root, "load", "-i", str(base_layout), "-t", "busybox:latest").code == 0
        side = Side(None, root, base)
        token = f"pwn{uuid.uuid4().hex[:10]}"
        world = World(side.new_work(token), token)
        _make_victims(world)
        before = _state(world)
        evil = hl.layer([hl.f(f"hostile/{token}", b"lie")])
        _, config = hl._base_image(base_layout)
        ids = [*config["rootfs"]["diff_ids"], "sha256:" + "0" * 64]  # type: ignore[index]
        out = _through_every_path(side, world, [evil], base=base_layout, diff_ids=ids)
        for what, run in out.runs.items():
            if run.code == 1:
                errors = [x for x in run.err.splitlines() if x.startswith("error: ")]
                assert len(errors) == 1, f"{what}: {run.err}"
        for key in ("export-local", "export-tar", "build-local", "build-tar"):
            if key in out.runs and out.runs[key].code != 0:
                assert not os.path.lexists(out.dests[key]), key
        assert out.runs["export-local"].code == 1  # the exporter checks every diff_id
        assert "sha256:" + "0" * 64 in out.runs["export-local"].err
        assert _state(world) == before
        assert _host_leaks(world) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def test_full_disk_is_one_clean_line_and_leaves_nothing(root_side: Side,
                                                        base_layout: Path) -> None:
    """ENOSPC while exporting (as root: a 1 MiB tmpfs as the destination's file system)."""
    token = f"pwn{uuid.uuid4().hex[:10]}"
    work = root_side.new_work(token)
    try:
        big = hl.layer([hl.f("hostile/big", os.urandom(3 << 20))])
        hl.write_layout(work / "layout", [big], base=base_layout)
        name = f"full-{token}:1"
        assert root_side.run("load", "-i", str(work / "layout"), "-t", name).code == 0
        with _small_tmpfs(work / "small", "1m") as small:
            for spec in (f"type=local,dest={small}/out", f"type=local,dest={small}",
                         f"type=tar,dest={small}/out.tar"):
                r = root_side.run("export", name, "-o", spec)
                _clean(r, spec)
                errors = [x for x in r.err.splitlines() if x.startswith("error: ")]
                assert r.code == 1 and len(errors) == 1, r.err
                assert "No space left on device" in errors[0], errors[0]
                assert os.listdir(small) == [], (spec, os.listdir(small))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_full_disk_in_the_sandbox_unpack(base_layout: Path) -> None:
    """ENOSPC while the daemon unpacks a snapshot (a 12 MiB tmpfs over the root's
    snapshot dir, so that only unpacks run out of room): one clean line naming the entry,
    no half-written snapshot, and the same build succeeds once there is room."""
    base = traversable_dir("pybuild-hostile-full-")
    root = base / "root"
    try:
        loaded = run_pybuild(root, "load", "-i", str(base_layout), "-t", "busybox:latest")
        assert loaded.code == 0, loaded.err
        big = hl.layer([hl.f("hostile/big", os.urandom(16 << 20))])
        hl.write_layout(base / "layout", [big], base=base_layout)
        assert run_pybuild(root, "load", "-i", str(base / "layout"), "-t", "full:1").code == 0
        for name, image in (("warm", "busybox"), ("ctx", "full:1")):
            text = f"FROM {image}\nRUN true\n"
            (base / name).mkdir()
            (base / name / "Dockerfile").write_text(text)
        r = run_pybuild(root, "build", str(base / "warm"))  # makes the sandbox dirs
        assert r.code == 0, r.err
        snaps = root / "sandbox" / "snapshots"
        owner = os.stat(snaps)
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size=12m,mode=0755,uid={owner.st_uid},gid={owner.st_gid}",
                        "tmpfs", str(snaps)], check=True)
        try:
            r = run_pybuild(root, "build", "--progress", "plain", str(base / "ctx"))
            _clean(r, "build")
            errors = [x for x in r.err.splitlines() if x.startswith("error: ")]
            assert r.code == 1 and len(errors) == 1, r.err
            assert "cannot write 'hostile/big'" in errors[0], errors[0]
            assert "No space left on device" in errors[0], errors[0]
            assert not [p for p in snaps.iterdir() if (p / "hostile").exists()]
        finally:
            subprocess.run(["umount", "-l", str(snaps)], check=False)
        r = run_pybuild(root, "build", "--progress", "plain", str(base / "ctx"))
        assert r.code == 0, r.err
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_other_users_cannot_run_or_read_set_uid_files_in_snapshots(
    root_side: Side, base_layout: Path
) -> None:
    """After a root build FROM an image with a 04755 file, a local user can neither run
    it nor read anything in root's snapshots."""
    _user()
    token = f"pwn{uuid.uuid4().hex[:10]}"
    world = World(root_side.new_work(token), token)
    try:
        layers = [hl.layer([hl.f(f"hostile/suid-{token}", b"#!/bin/sh\necho ran\n", 0o4755)])]
        out = _through_every_path(root_side, world, layers, base=base_layout)
        assert out.runs["sandbox"].code == 0, out.runs["sandbox"].err
        (suid,) = (root_side.root / "sandbox").rglob(f"suid-{token}")
        probe = subprocess.run(
            ["runuser", "-u", USER, "--", "sh", "-c",
             f'cat "{suid}" >/dev/null 2>&1 && echo READ; "{suid}" 2>/dev/null;'
             f' ls "{suid.parent.parent}" >/dev/null 2>&1 && echo LISTED; true'],
            capture_output=True, text=True, check=False)
        assert probe.stdout.split() == [], probe.stdout
    finally:
        shutil.rmtree(world.work, ignore_errors=True)

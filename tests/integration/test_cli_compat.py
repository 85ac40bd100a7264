"""A `docker buildx build` / docker user's command lines, one table row each: the flag,
the command line, and its effect checked on the artifact (an exported tree, an archive
read by skopeo, the engine's view in podman, the registry's answers). A regression names
its flag: the test ids are the flags.

Remote contexts are served on 127.0.0.1 by this module: a git repository over `git
daemon` (git://) and over plain HTTP (the "dumb" protocol: the bare repository served
statically after `git update-server-info`), and a tarball, a Dockerfile and a file from
the same HTTP server.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, _import_base, tool, traversable_dir
from tests.registry_fixture import RunningRegistry, free_port, registry  # noqa: F401

NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@dataclass
class Run:
    code: int
    out: str
    err: str


def run(root: Path, *args: str, stdin: bytes | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> Run:
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update({**NO_PROXY, "PYTHONPATH": str(REPO), **(env or {})})
    full_env.pop("PYBUILD_ROOT", None)
    proc = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(root), *args],
                          input=stdin if stdin is not None else b"", capture_output=True,
                          cwd=cwd or REPO, env=full_env, timeout=300)
    return Run(proc.returncode, proc.stdout.decode(errors="replace"),
               proc.stderr.decode(errors="replace"))


def ok(r: Run) -> Run:
    assert r.code == 0, r.err
    return r


# -- servers for remote contexts ------------------------------------------------------------


@dataclass
class Remote:
    work: Path  # what the HTTP server serves
    http: str  # http://127.0.0.1:PORT
    git: str  # git://127.0.0.1:PORT


REPO_DOCKERFILE = "FROM busybox\nCOPY f.txt /from-subdir\n"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run([tool("git"), "-c", "user.email=t@example.com", "-c", "user.name=t",
                    "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    work = traversable_dir("pybuild-remote-")
    src = work / "src"
    (src / "sub").mkdir(parents=True)
    (src / "Dockerfile").write_text("FROM busybox\nCOPY sub/f.txt /from-root\n")
    (src / "sub" / "Dockerfile").write_text(REPO_DOCKERFILE)
    (src / "sub" / "f.txt").write_text("git-subdir\n")
    _git(src, "init", "-q")
    _git(src, "add", ".")
    _git(src, "commit", "-q", "-m", "one")
    _git(src, "tag", "v1")
    _git(work, "clone", "-q", "--bare", str(src), str(work / "app.git"))
    _git(work / "app.git", "update-server-info")
    ctx = work / "tarctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY t.txt /from-tarball\n")
    (ctx / "t.txt").write_text("tarball\n")
    with tarfile.open(work / "ctx.tar.gz", "w:gz") as tar:
        tar.add(ctx, arcname=".")
    (work / "remote.Dockerfile").write_text("FROM busybox\nRUN echo url > /from-url\n")
    (work / "plain.txt").write_text("downloaded\n")

    handler = functools.partial(_Quiet, directory=str(work))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    daemon = None
    for _attempt in range(5):
        port = free_port()
        daemon = subprocess.Popen(
            [tool("git"), "daemon", "--reuseaddr", "--export-all", f"--port={port}",
             "--listen=127.0.0.1", f"--base-path={work}", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and daemon.poll() is None:
            probe = subprocess.run([tool("git"), "ls-remote", f"git://127.0.0.1:{port}/app.git"],
                                   capture_output=True, check=False)
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        else:
            daemon.kill()
            daemon.wait()
            daemon = None
            continue
        break
    if daemon is None:
        pytest.fail("git daemon did not start", pytrace=False)
    try:
        yield Remote(work=work, http=f"http://127.0.0.1:{server.server_address[1]}",
                     git=f"git://127.0.0.1:{port}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        server.shutdown()
        server.server_close()
        shutil.rmtree(work, ignore_errors=True)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


# -- a root for this module ---------------------------------------------------------------


@pytest.fixture(scope="module")
def root(base_layout: Path) -> Iterator[Path]:
    base = traversable_dir("pybuild-compat-")
    path = base / "root"
    _import_base(path, base_layout)
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def work() -> Iterator[Path]:
    d = traversable_dir("pybuild-compat-work-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctx_with(work: Path, dockerfile: str, **files: str) -> Path:
    ctx = work / f"ctx-{uuid.uuid4().hex[:6]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (ctx / name).write_text(text)
    return ctx


def skopeo_json(*args: str) -> dict[str, object]:
    out = subprocess.run([tool("skopeo"), *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def config_digest(root: Path, image: str) -> str:
    return str(json.loads(ok(run(root, "inspect", image)).out)["Id"])


# -- build: one row per flag -------------------------------------------------------------------


@dataclass
class Env:
    root: Path
    work: Path
    remote: Remote
    out: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out = self.work / "out"


@dataclass
class BuildCase:
    flag: str
    argv: Callable[[Env], list[str]]
    check: Callable[[Env, Run], None]
    stdin: Callable[[Env], bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Callable[[Env], Path] | None = None


def _file(name: str, text: str) -> Callable[[Env, Run], None]:
    def check(env: Env, r: Run) -> None:
        ok(r)
        assert (env.out / name).read_text() == text

    return check


STDIN_DF = b"FROM busybox\nRUN echo stdin > /from-stdin\n"


def _tgz(env: Env) -> bytes:
    return (env.remote.work / "ctx.tar.gz").read_bytes()


def _plain_tar(env: Env) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"FROM busybox\nCOPY p.txt /from-plain-tar\n"
        for name, payload in (("Dockerfile", data), ("p.txt", b"plain\n")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _repo_tar(env: Env) -> bytes:
    """A context archive whose Dockerfile is not at its root: `sub/Dockerfile`, which
    copies `f.txt` from the archive's root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(env.remote.work / "src" / "sub" / "f.txt", arcname="f.txt")
        tar.add(env.remote.work / "src" / "sub" / "Dockerfile", arcname="sub/Dockerfile")
    return buf.getvalue()


def _local(env: Env) -> list[str]:
    return ["-o", f"type=local,dest={env.out}"]


def _empty_ctx(env: Env) -> str:
    d = env.work / "empty"
    d.mkdir(exist_ok=True)
    return str(d)


def _platform_local(env: Env, r: Run) -> None:
    ok(r)
    import platform as p

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(p.machine(), p.machine())
    cfg = skopeo_json("inspect", "--config", f"oci-archive:{env.out}.tar")
    assert cfg["architecture"] == arch


def _platforms_joined(env: Env, r: Run) -> None:
    ok(r)
    raw = skopeo_json("inspect", "--raw", f"oci-archive:{env.out}.tar")
    found = sorted(m["platform"]["architecture"] for m in raw["manifests"])  # type: ignore[index, union-attr]
    assert found == ["amd64", "arm64"], raw


def _label_without_value(env: Env, r: Run) -> None:
    ok(r)
    labels = json.loads(ok(run(env.root, "inspect", "lbl:1")).out)["Config"]["Labels"]
    assert labels == {"only.key": "", "k": "v"}


def _quiet(env: Env, r: Run) -> None:
    ok(r)
    lines = r.out.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"sha256:[0-9a-f]{64}", lines[0]), r.out
    assert "built" not in r.err and "#1" not in r.err
    # the image ID is the config digest, as buildx -q prints it, and `inspect` takes it
    assert lines[0] == config_digest(env.root, "quiet:1")
    assert json.loads(ok(run(env.root, "inspect", lines[0][7:19])).out)["Id"] == lines[0]


def _iid_and_metadata(env: Env, r: Run) -> None:
    ok(r)
    iid = (env.work / "iid").read_text()
    meta = json.loads((env.work / "meta.json").read_text())
    # one index.json entry per -t name (ref.name is the tag), as BuildKit writes them
    cfg = skopeo_json("inspect", "--raw", f"oci-archive:{env.out}.tar:2")
    assert iid == cfg["config"]["digest"] == meta["containerimage.config.digest"]  # type: ignore[index]
    assert meta["image.name"] == "docker.io/library/meta:1,docker.io/library/meta:2"
    assert re.fullmatch(r"pybuild/local/[0-9a-z]{25}", meta["buildx.build.ref"])
    desc = meta["containerimage.descriptor"]
    assert desc["digest"] == meta["containerimage.digest"]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert desc["annotations"]["config.digest"] == iid
    assert meta["containerimage.digest"] == json.loads(
        ok(run(env.root, "inspect", "meta:1")).out)["manifest_digest"]


def _secret_from_env(env: Env, r: Run) -> None:
    ok(r)
    assert (env.out / "ok").read_text() == "env\n"


def _secret_from_file(env: Env, r: Run) -> None:
    ok(r)
    assert (env.out / "ok").read_text() == "file\n"


# (the secret's value is not in the step's cache key, as in BuildKit: each case has its
# own step)
SECRET_DF = ('FROM busybox\nRUN --mount=type=secret,id=MYTOKEN,required=true '
             'cat /run/secrets/MYTOKEN > /ok # {}\n')


def _refused(flag: str) -> Callable[[Env, Run], None]:
    def check(env: Env, r: Run) -> None:
        assert r.code == 1, r.err
        assert flag in r.err and "not supported" in r.err, r.err
        assert "Traceback" not in r.err

    return check


def _named(message: str) -> Callable[[Env, Run], None]:
    def check(env: Env, r: Run) -> None:
        assert r.code == 1, r.err
        assert message in r.err, r.err
        assert "Traceback" not in r.err

    return check


def _annotated(env: Env, r: Run) -> None:
    ok(r)
    raw = skopeo_json("inspect", "--raw", f"oci-archive:{env.out}.tar")
    assert raw["annotations"] == {"a": "b"}, raw
    with tarfile.open(f"{env.out}.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["d"] == "e"  # the layout's descriptor
    # the store's image (its -t name) carries them too
    stored = json.loads(ok(run(env.root, "inspect", "ann:1")).out)
    assert stored["manifest"]["annotations"] == {"a": "b"}
    assert stored["descriptor"]["annotations"] == {"d": "e"}


def _sde(env: Env, r: Run) -> None:
    ok(r)
    row = json.loads(ok(run(env.root, "images", "--format", "json", "sde")).out)
    # CREATED is the image's own time (SOURCE_DATE_EPOCH=86400: 1970-01-02), not when
    # it was named
    assert row["CreatedAt"].startswith(time.strftime("%Y-%m-%d", time.localtime(86400)))
    assert "years ago" in row["CreatedSince"]


BUILD_CASES = [
    BuildCase("-f -", lambda e: ["build", "-f", "-", *_local(e), _empty_ctx(e)],
              _file("from-stdin", "stdin\n"), stdin=lambda e: STDIN_DF),
    BuildCase("context - (Dockerfile)", lambda e: ["build", *_local(e), "-"],
              _file("from-stdin", "stdin\n"), stdin=lambda e: STDIN_DF),
    BuildCase("context - (tar.gz)", lambda e: ["build", *_local(e), "-"],
              _file("from-tarball", "tarball\n"), stdin=_tgz),
    BuildCase("context - (tar)", lambda e: ["build", *_local(e), "-"],
              _file("from-plain-tar", "plain\n"), stdin=_plain_tar),
    BuildCase("context - (tar) with -f inside it",
              lambda e: ["build", "-f", "sub/Dockerfile", *_local(e), "-"],
              _file("from-subdir", "git-subdir\n"), stdin=lambda e: _repo_tar(e)),
    BuildCase("git context https .git#ref:subdir",
              lambda e: ["build", *_local(e), f"{e.remote.http}/app.git#v1:sub"],
              _file("from-subdir", "git-subdir\n")),
    BuildCase("git context git:// ?ref=&subdir=",
              lambda e: ["build", *_local(e), f"{e.remote.git}/app.git?ref=main&subdir=sub"],
              _file("from-subdir", "git-subdir\n")),
    BuildCase("git context, -f inside it",
              lambda e: ["build", "-f", "sub/Dockerfile", *_local(e), f"{e.remote.git}/app.git"],
              _named("f.txt")),  # the root is the context: sub/f.txt is not f.txt
    BuildCase("git context, Dockerfile at its root",
              lambda e: ["build", *_local(e), f"{e.remote.git}/app.git#main"],
              _file("from-root", "git-subdir\n")),
    BuildCase("tarball URL context", lambda e: ["build", *_local(e),
                                                f"{e.remote.http}/ctx.tar.gz"],
              _file("from-tarball", "tarball\n")),
    BuildCase("-f URL", lambda e: ["build", "-f", f"{e.remote.http}/remote.Dockerfile",
                                   *_local(e), _empty_ctx(e)],
              _file("from-url", "url\n")),
    BuildCase("--build-context name=git URL",
              lambda e: ["build", "--build-context", f"src={e.remote.git}/app.git#main:sub",
                         *_local(e), str(ctx_with(e.work, "FROM busybox\nCOPY --from=src "
                                                          "f.txt /named-git\n"))],
              _file("named-git", "git-subdir\n")),
    BuildCase("--build-context name=https URL",
              lambda e: ["build", "--build-context", f"dl={e.remote.http}/plain.txt",
                         *_local(e), str(ctx_with(e.work, "FROM busybox\nCOPY --from=dl "
                                                          "context /named-http\n"))],
              _file("named-http", "downloaded\n")),
    BuildCase("--platform local",
              lambda e: ["build", "--platform", "local", "-o",
                         f"type=oci,dest={e.out}.tar", str(ctx_with(e.work, "FROM busybox\n"))],
              _platform_local),
    BuildCase("--platform repeated",
              lambda e: ["build", "--platform", "linux/amd64", "--platform", "linux/arm64",
                         "-o", f"type=oci,dest={e.out}.tar",
                         str(ctx_with(e.work, "FROM busybox\nENV A=1\n"))],
              _platforms_joined),
    BuildCase("--label KEY (no =)",
              lambda e: ["build", "-t", "lbl:1", "--label", "only.key", "--label", "k=v",
                         str(ctx_with(e.work, "FROM busybox\n"))],
              _label_without_value, env={"only.key": "not-from-env"}),
    BuildCase("--secret id=NAME (environment)",
              lambda e: ["build", "--secret", "id=MYTOKEN", *_local(e),
                         str(ctx_with(e.work, SECRET_DF.format("env")))],
              _secret_from_env, env={"MYTOKEN": "env\n"}),
    BuildCase("--secret id=NAME (file)",
              lambda e: ["build", "--secret", "id=MYTOKEN", *_local(e),
                         str(ctx_with(e.work, SECRET_DF.format("file")))],
              _secret_from_file, cwd=lambda e: _secret_cwd(e)),
    BuildCase("-q", lambda e: ["build", "-q", "-t", "quiet:1",
                               str(ctx_with(e.work, "FROM busybox\nENV Q=1\n"))], _quiet),
    BuildCase("--iidfile --metadata-file",
              lambda e: ["build", "-t", "meta:1", "-t", "meta:2", "--iidfile",
                         str(e.work / "iid"), "--metadata-file", str(e.work / "meta.json"),
                         "-o", f"type=oci,dest={e.out}.tar,compression=uncompressed",
                         str(ctx_with(e.work, "FROM busybox\nENV M=1\n"))],
              _iid_and_metadata),
    BuildCase("SOURCE_DATE_EPOCH -> images CREATED",
              lambda e: ["build", "-t", "sde:1", "--build-arg", "SOURCE_DATE_EPOCH=86400",
                         str(ctx_with(e.work, "FROM busybox\nENV S=1\n"))], _sde),
    BuildCase("--annotation",
              lambda e: ["build", "-t", "ann:1", "--annotation", "a=b", "--annotation",
                         "manifest-descriptor:d=e", "-o", f"type=oci,dest={e.out}.tar",
                         str(ctx_with(e.work, "FROM busybox\nENV ANN=1\n"))],
              _annotated),
    BuildCase("--add-host", lambda e: ["build", "--add-host", "db:10.0.0.2", _empty_ctx(e)],
              _refused("--add-host")),
    BuildCase("--shm-size", lambda e: ["build", "--shm-size", "128m", _empty_ctx(e)],
              _refused("--shm-size")),
    BuildCase("--ulimit", lambda e: ["build", "--ulimit", "nofile=1024:1024", _empty_ctx(e)],
              _refused("--ulimit")),
    BuildCase("--squash", lambda e: ["build", "--squash", _empty_ctx(e)], _refused("--squash")),
    BuildCase("--cache-to mdoe=max",
              lambda e: ["build", "--cache-to", f"type=local,dest={e.work}/c,mdoe=max",
                         _empty_ctx(e)], _named("unknown key 'mdoe' (did you mean 'mode'?)")),
    BuildCase("--cache-from unknown key",
              lambda e: ["build", "--cache-from", f"type=local,scr={e.work}/c", _empty_ctx(e)],
              _named("unknown key 'scr' (did you mean 'src'?)")),
    BuildCase("--secret unknown key",
              lambda e: ["build", "--secret", "id=a,scr=/x", _empty_ctx(e)],
              _named("unknown key 'scr' (did you mean 'src'?)")),
    BuildCase("--ssh key=value", lambda e: ["build", "--ssh", "id=default", _empty_ctx(e)],
              _named("--ssh takes ID[=SOCKET|KEY,...]")),
    BuildCase("--build-context unknown scheme",
              lambda e: ["build", "--build-context", "a=docker-imag://busybox", _empty_ctx(e)],
              _named("did you mean 'docker-image://'?")),
]


def _secret_cwd(env: Env) -> Path:
    d = env.work / "secret-cwd"
    d.mkdir(exist_ok=True)
    (d / "MYTOKEN").write_text("file\n")
    return d


@pytest.mark.parametrize("case", BUILD_CASES, ids=[c.flag for c in BUILD_CASES])
def test_build_flag(case: BuildCase, root: Path, work: Path, remote: Remote) -> None:
    env = Env(root=root, work=work, remote=remote)
    r = run(root, *case.argv(env), stdin=case.stdin(env) if case.stdin else None,
            env=case.env, cwd=case.cwd(env) if case.cwd else None, unset=("MYTOKEN",))
    case.check(env, r)


def test_scratch_dirs_are_removed(root: Path, work: Path, remote: Remote) -> None:
    """Unpacked contexts live only as long as their build; a killed build's are swept."""
    stale = root / "cache" / "inputs" / "build-stale"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "lock").write_text("")
    env = Env(root=root, work=work, remote=remote)
    ok(run(root, "build", *_local(env), "-", stdin=_tgz(env)))
    assert list((root / "cache" / "inputs").iterdir()) == []


def test_hostile_context_archive_is_refused(root: Path, work: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, link in (("Dockerfile", tarfile.REGTYPE, ""),
                                 ("pw", tarfile.LNKTYPE, "../../../../etc/passwd")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"FROM busybox\nCOPY pw /pw\n" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = run(root, "build", "-o", f"type=local,dest={work}/out", "-", stdin=buf.getvalue())
    assert r.code == 1 and "climbs out" in r.err, r.err
    assert not (work / "out").exists()


# -- --load: the result in podman --------------------------------------------------------------


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    base = [tool("podman"), "--cgroup-manager=cgroupfs", "--events-backend=file"]
    if shutil.which("runc"):
        base += ["--runtime", "runc"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("spelling", [["--load"], ["--load=podman"], ["-o", "type=docker"]],
                         ids=["--load", "--load=podman", "-o type=docker (no dest)"])
def test_load_into_podman(root: Path, work: Path, spelling: list[str]) -> None:
    tool("podman")
    name = f"localhost/pybuild-load/{uuid.uuid4().hex[:8]}:1"
    ctx = ctx_with(work, "FROM busybox\nRUN echo loaded > /marker\n"
                         "HEALTHCHECK --interval=5s CMD true\nLABEL from=pybuild\n")
    r = ok(run(root, "build", *spelling, "-t", name, str(ctx)))
    assert "into podman" in r.err
    try:
        assert _podman("image", "exists", name).returncode == 0
        info = json.loads(_podman("inspect", name).stdout)[0]
        # Same image: podman's ID is the config digest, pybuild's image ID too.
        assert "sha256:" + info["Id"] == config_digest(root, name)
        assert info["Labels"]["from"] == "pybuild"
        ran = _podman("run", "--rm", "--pull", "never", "--network", "none", "--ulimit",
                      "nofile=1024:1024", "--ulimit", "nproc=1000:1000", name, "cat",
                      "/marker")
        assert ran.returncode == 0 and ran.stdout == "loaded\n", ran.stderr
    finally:
        _podman("rmi", "--force", name)
    # and the image stays in pybuild's store, as always
    assert ok(run(root, "images", "-q", name)).out.strip()


def test_load_keeps_the_healthcheck(root: Path, work: Path) -> None:
    tool("podman")
    name = f"localhost/pybuild-load/hc-{uuid.uuid4().hex[:8]}:1"
    ctx = ctx_with(work, "FROM busybox\nHEALTHCHECK --interval=5s CMD true\n")
    ok(run(root, "build", "--load", "-t", name, str(ctx)))
    try:
        info = json.loads(_podman("inspect", name).stdout)[0]
        assert info.get("Healthcheck", {}).get("Test") == ["CMD-SHELL", "true"], info
    finally:
        _podman("rmi", "--force", name)


def test_load_skips_what_the_engine_has(root: Path, work: Path) -> None:
    tool("podman")
    name = f"localhost/pybuild-load/again-{uuid.uuid4().hex[:8]}"
    ctx = ctx_with(work, "FROM busybox\nENV AGAIN=1\n")
    try:
        ok(run(root, "build", "--load", "-t", f"{name}:1", str(ctx)))
        r = ok(run(root, "build", "--load", "-t", f"{name}:1", str(ctx)))
        assert "already has the image" in r.err
        r = ok(run(root, "build", "--load", "-t", f"{name}:1", "-t", f"{name}:2", str(ctx)))
        assert "tagged" in r.err
        assert _podman("image", "exists", f"{name}:2").returncode == 0
    finally:
        _podman("rmi", "--force", f"{name}:1", f"{name}:2")


def test_load_without_an_engine_is_a_clear_error(root: Path, work: Path) -> None:
    r = run(root, "build", "--load", str(ctx_with(work, "FROM busybox\n")),
            env={"PATH": str(Path(sys.executable).parent)})
    assert r.code == 1 and "neither podman nor docker is installed" in r.err, r.err
    r = run(root, "build", "--load=docker", str(ctx_with(work, "FROM busybox\n")),
            env={"PATH": str(Path(sys.executable).parent)})
    assert r.code == 1 and "docker is not installed" in r.err, r.err


# -- --pull and --push against a real registry --------------------------------------------------


def test_pull_always_re_resolves_the_base(root: Path, work: Path,
                                          registry: RunningRegistry) -> None:  # noqa: F811
    base = registry.ref(f"pull/base-{uuid.uuid4().hex[:6]}:1")
    one = ctx_with(work, "FROM busybox\nRUN echo one > /version\n")
    ok(run(root, "build", "-t", base, "--push", str(one)))
    user = ctx_with(work, f"FROM {base}\nRUN cat /version > /seen\n")
    ok(run(root, "build", "-o", f"type=local,dest={work}/a", str(user)))
    assert (work / "a" / "seen").read_text() == "one\n"
    # The registry's image changes behind the store's back (another machine pushed).
    other = work / "other-root"
    two = ctx_with(work, "FROM busybox\nRUN echo two > /version\n")
    _import_base(other, REPO / "testdata" / "generated" / "busybox" / "oci")
    ok(run(other, "build", "-t", base, "--push", str(two)))
    for flag, seen in ((["--pull=false"], "one\n"), ([], "one\n"), (["--pull"], "two\n"),
                       (["--pull=true"], "two\n"), (["--pull", "always"], "two\n")):
        out = work / f"out-{uuid.uuid4().hex[:6]}"
        ok(run(root, "build", *flag, "-o", f"type=local,dest={out}", str(user)))
        assert (out / "seen").read_text() == seen, flag
        if flag == ["--pull"]:
            # and the store now holds the registry's image under the name
            assert (ok(run(root, "images", "--format", "{{.ID}}", base)).out.strip()
                    == ok(run(other, "images", "--format", "{{.ID}}", base)).out.strip())
    r = run(root, "build", "--pull", "never", "-o", f"type=local,dest={work}/n",
            str(ctx_with(work, f"FROM {registry.ref('pull/absent:1')}\n")))
    assert r.code == 1 and "not in the local image store" in r.err


def _registry_get(reg: RunningRegistry, path: str, accept: str = "") -> int:
    import urllib.request

    req = urllib.request.Request(f"{reg.url}{path}", method="HEAD",
                                 headers={"Accept": accept} if accept else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_push_reports_the_registry_digests(root: Path, work: Path,
                                           registry: RunningRegistry) -> None:  # noqa: F811
    repo = f"push/app-{uuid.uuid4().hex[:6]}"
    ref = registry.ref(f"{repo}:1")
    r = ok(run(root, "build", "-q", "--push", "-t", ref, "--iidfile", str(work / "iid"),
               "--metadata-file", str(work / "meta.json"),
               str(ctx_with(work, "FROM busybox\nRUN echo p > /p\n"))))
    meta = json.loads((work / "meta.json").read_text())
    manifest = meta["containerimage.digest"]
    accept = "application/vnd.oci.image.manifest.v1+json"
    # what -q, --iidfile and the metadata report is what the registry has
    assert _registry_get(registry, f"/v2/{repo}/manifests/{manifest}", accept) == 200
    assert meta["containerimage.descriptor"]["digest"] == manifest
    image_id = r.out.strip()
    assert image_id == (work / "iid").read_text() == meta["containerimage.config.digest"]
    assert _registry_get(registry, f"/v2/{repo}/blobs/{image_id}") == 200
    assert meta["image.name"] == ref
    # the local manifest (uncompressed layers) is not what was pushed, and not reported
    local = json.loads(ok(run(root, "inspect", ref)).out)["manifest_digest"]
    assert local != manifest


# -- image commands ------------------------------------------------------------------------------


@pytest.fixture
def images_root(base_layout: Path, work: Path) -> Path:
    """A root with busybox, app:1 and app:2 (one image, two names) and other:1."""
    path = work / "root"
    _import_base(path, base_layout)
    ok(run(path, "build", "-t", "app:1", "-t", "app:2",
           str(ctx_with(work, "FROM busybox\nRUN echo app > /app\nCMD [\"sh\"]\n"))))
    ok(run(path, "build", "-t", "other:1", str(ctx_with(work, "FROM busybox\nENV O=1\n"))))
    return path


def test_images_columns_quiet_and_formats(images_root: Path) -> None:
    table = ok(run(images_root, "images")).out.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE",
                                "PLATFORMS"]
    app_id = config_digest(images_root, "app:1")
    assert ok(run(images_root, "images", "-q", "app")).out.split() == [app_id[7:19]] * 2
    assert ok(run(images_root, "images", "-q", "--no-trunc", "app:2")).out.split() == [app_id]
    names = ok(run(images_root, "images", "--format", "{{.Repository}}:{{.Tag}}")).out.split()
    assert sorted(names) == ["app:1", "app:2", "busybox:latest", "other:1"]
    rows = [json.loads(x) for x in ok(run(images_root, "images", "--format",
                                          "json")).out.splitlines()]
    assert {"Repository", "Tag", "ID", "Digest", "CreatedAt", "Size"} <= set(rows[0])
    same = [json.loads(x) for x in ok(run(images_root, "images", "--format",
                                          "{{json .}}")).out.splitlines()]
    for row in (*rows, *same):  # (the one field that moves with the clock)
        row.pop("CreatedSince")
    assert rows == same
    t = ok(run(images_root, "images", "--format", "table {{.Repository}}\t{{.ID}}")).out
    assert t.splitlines()[0].split() == ["REPOSITORY", "IMAGE", "ID"]
    assert ok(run(images_root, "images", "--filter", "reference=oth*")).out.count("\n") == 2
    bad = run(images_root, "images", "--format", "{{.Nope")
    assert bad.code == 1 and "invalid --format" in bad.err


def test_inspect_by_name_id_digest_and_template(images_root: Path) -> None:
    by_name = json.loads(ok(run(images_root, "inspect", "app:1")).out)
    image_id = by_name["Id"]
    assert by_name["RepoTags"] == ["app:1", "app:2"]
    assert by_name["Config"]["Cmd"] == ["sh"] and by_name["config"]["config"]["Cmd"] == ["sh"]
    for key in (image_id, image_id[7:19], image_id[7:11], by_name["manifest_digest"],
                f"app@{by_name['manifest_digest']}"):
        assert json.loads(ok(run(images_root, "inspect", key)).out)["Id"] == image_id, key
    assert ok(run(images_root, "inspect", "--format", "{{.Id}} {{json .Config.Cmd}}",
                  "app:1")).out == f'{image_id} ["sh"]\n'
    both = json.loads(ok(run(images_root, "inspect", "--format", "json", "app:1",
                             "other:1")).out)
    assert [b["RepoTags"][0] for b in both] == ["app:1", "other:1"]
    missing = run(images_root, "inspect", "nope:1")
    assert missing.code == 1 and "nope:1" in missing.err


def test_tag_rmi_export_by_id(images_root: Path, work: Path) -> None:
    image_id = config_digest(images_root, "other:1")
    short = image_id[7:19]
    ok(run(images_root, "tag", short, "other:again"))
    out = work / "by-id.tar"
    ok(run(images_root, "export", short, "-o", f"type=oci,dest={out}"))
    assert skopeo_json("inspect", "--config", f"oci-archive:{out}")["config"]["Env"][-1] == "O=1"  # type: ignore[index]
    # an ID with several names needs -f, as docker's rmi
    r = run(images_root, "rmi", short)
    assert r.code == 1 and "must be forced" in r.err
    r = ok(run(images_root, "rmi", "-f", short))
    assert sorted(r.out.splitlines()) == ["Untagged: other:1", "Untagged: other:again"]
    assert run(images_root, "inspect", "other:1").code == 1
    # by name: just that name; -f: a missing image is not an error
    ok(run(images_root, "rmi", "app:2"))
    assert ok(run(images_root, "inspect", "app:1")).code == 0
    r = ok(run(images_root, "rmi", "-f", "gone:1"))
    assert "gone:1" in r.err and r.out == ""
    assert run(images_root, "rmi", "gone:1").code == 1


def test_history_columns(images_root: Path) -> None:
    lines = ok(run(images_root, "history", "app:1")).out.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert lines[1].startswith(config_digest(images_root, "app:1")[7:19])
    assert "CMD [\"sh\"]" in lines[1] and "RUN /bin/sh -c echo app > /app" in lines[2]
    assert lines[2].startswith("<missing>")
    assert ok(run(images_root, "image", "history", "-q", "app:1")).out.splitlines()[1:] == [
        "<missing>", "<missing>"]
    rows = ok(run(images_root, "history", "--human=false", "--format",
                  "{{.Size}}|{{.CreatedBy}}", "app:1")).out.splitlines()
    assert rows[0].startswith("0|") and int(rows[1].split("|")[0]) > 0


def test_save_several_images_and_load_them_back(images_root: Path, work: Path,
                                                base_layout: Path) -> None:
    archive = work / "images.tar"
    ok(run(images_root, "save", "-o", str(archive), "app:1", "other:1", "busybox"))
    for name in ("app:1", "other:1", "busybox:latest"):
        cfg = skopeo_json("inspect", "--config", f"docker-archive:{archive}:{name}")
        assert cfg["rootfs"]["diff_ids"]  # type: ignore[index]
    fresh = work / "fresh"
    r = ok(run(fresh, "load", stdin=archive.read_bytes()))  # `load < FILE`, as docker
    assert sorted(x.split()[2] for x in r.out.splitlines()) == ["app:1", "busybox:latest",
                                                               "other:1"]
    assert config_digest(fresh, "app:1") == config_digest(images_root, "app:1")
    # podman reads the same archive
    tool("podman")
    loaded = _podman("load", "-i", str(archive))
    try:
        assert loaded.returncode == 0, loaded.stderr
        assert "app:1" in loaded.stdout and "other:1" in loaded.stdout
    finally:
        _podman("rmi", "--force", "localhost/app:1", "localhost/other:1",
                "localhost/busybox:latest")


def test_load_names_from_the_archive(images_root: Path, work: Path) -> None:
    exported = {}
    for kind in ("oci", "docker"):
        exported[kind] = work / f"{kind}.tar"
        ok(run(images_root, "export", "app:1", "-o", f"type={kind},dest={exported[kind]}"))
    layout = work / "layout"
    ok(run(images_root, "export", "app:1", "-o", f"type=oci,dest={layout},tar=false"))
    for source in (*exported.values(), layout):
        fresh = work / f"r-{uuid.uuid4().hex[:6]}"
        r = ok(run(fresh, "load", "-i", str(source)))  # no -t: the name it records
        assert r.out.startswith("Loaded image: app:1"), r.out
    # a classic archive, as podman save (docker save before 25) writes it
    tool("podman")
    docker_tar = exported["docker"]
    assert _podman("load", "-i", str(docker_tar)).returncode == 0
    classic = work / "classic.tar"
    try:
        saved = _podman("save", "--format", "docker-archive", "-o", str(classic),
                        "docker.io/library/app:1")
        assert saved.returncode == 0, saved.stderr
    finally:
        _podman("rmi", "--force", "docker.io/library/app:1")
    with tarfile.open(classic) as tar:
        assert "oci-layout" not in tar.getnames()
    fresh = work / "classic-root"
    r = ok(run(fresh, "load", "-i", str(classic)))
    assert "app:1" in r.out
    assert config_digest(fresh, "app:1") == config_digest(images_root, "app:1")
    # the loaded image is usable: unpacked by umoci, files intact
    from tests.integration.conftest import umoci_rootfs

    rootfs = umoci_rootfs(fresh, "app:1", work / "u")
    assert (rootfs / "app").read_text() == "app\n"


def test_import_a_root_filesystem(images_root: Path, work: Path) -> None:
    rootfs = work / "rootfs.tar.gz"
    with tarfile.open(rootfs, "w:gz") as tar:
        for name, data in (("etc/os-release", b"ID=imported\n"), ("bin/tool", b"#!x\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    out = ok(run(images_root, "import", str(rootfs), "-t", "imported:1", "-c", 'CMD ["/bin/tool"]',
                 "-c", "ENV A=1 B=2", "-c", "WORKDIR /etc", "-m", "from a test"))
    info = json.loads(ok(run(images_root, "inspect", "imported:1")).out)
    assert out.out.strip() == info["Id"]
    assert info["Config"]["Cmd"] == ["/bin/tool"] and info["Config"]["WorkingDir"] == "/etc"
    assert info["Config"]["Env"] == ["A=1", "B=2"] and info["Comment"] == "from a test"
    assert len(info["RootFS"]["Layers"]) == 1
    # an image to build from, like any other
    ok(run(images_root, "build", "-o", f"type=local,dest={work}/built",
           str(ctx_with(work, "FROM imported:1\nCOPY x /x\n", x="y"))))
    assert (work / "built" / "etc" / "os-release").read_text() == "ID=imported\n"
    # docker's positional name and stdin
    ok(run(images_root, "import", "-", "imported:2", stdin=rootfs.read_bytes()))
    bad = run(images_root, "import", str(rootfs), "-t", "x:1", "-c", "RUN true")
    assert bad.code == 1 and "RUN is not a change import accepts" in bad.err


def test_prune_takes_buildx_flags(images_root: Path) -> None:
    r = ok(run(images_root, "prune", "-f", "--max-used-space", "100GB", "--reserved-space",
               "1GB", "--min-free-space", "1MB"))
    assert r.out.startswith("removed ")
    bad = run(images_root, "prune", "--max-used-space", "lots")
    assert bad.code == 1 and "--max-used-space" in bad.err


def test_stdout_closed_early_is_quiet(images_root: Path) -> None:
    """`pybuild images | head -1`: the pipe closes early; pybuild exits as coreutils do."""
    import subprocess as sp

    from pybuild.root import Root

    r = Root(images_root)
    record = r.images.get("app:1")
    for i in range(3000):
        r.images.put(f"many/name-{i}:1", record.descriptor, record.created)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = sp.run(f"{sys.executable} -m pybuild --root {images_root} images | head -1",
                  shell=True, capture_output=True, text=True, env=env, timeout=120,
                  executable="/bin/bash")
    assert proc.stdout.startswith("REPOSITORY")
    assert proc.stderr == "", proc.stderr
    proc = sp.run(f"set -o pipefail; {sys.executable} -m pybuild --root {images_root} "
                  "images -q | head -1", shell=True, capture_output=True, text=True, env=env,
                  timeout=120, executable="/bin/bash")
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_version_completion_and_man(images_root: Path, work: Path) -> None:
    from pybuild import __version__

    assert ok(run(images_root, "version")).out.startswith(f"pybuild {__version__}\n")
    script = work / "pybuild.bash"
    script.write_text(ok(run(images_root, "completion", "bash")).out)
    bash = tool("bash")
    check = subprocess.run([bash, "-c", f"source {script} && complete -p pybuild && "
                            "COMP_WORDS=(pybuild build --net); COMP_CWORD=2; _pybuild; "
                            "echo ${COMPREPLY[*]}; "
                            "COMP_WORDS=(pybuild build --network ''); COMP_CWORD=3; "
                            "_pybuild; echo ${COMPREPLY[*]}"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "--network" in check.stdout and "default none host" in check.stdout
    zsh_script = ok(run(images_root, "completion", "zsh")).out
    zsh = shutil.which("zsh")
    if zsh is None:
        from tests.tooling import missing

        missing("zsh is not installed (run scripts/setup.sh)")
    zfile = work / "_pybuild"
    zfile.write_text(zsh_script)
    assert subprocess.run([zsh, "-n", str(zfile)], capture_output=True).returncode == 0
    man = ok(run(images_root, "man")).out
    groff = tool("groff")
    rendered = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=man,
                              capture_output=True, text=True, check=False)
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    assert ".SS \"build\"" in man and "\\-\\-load" in man


# -- as an unprivileged user -----------------------------------------------------------------


def test_rootless_stdin_context_and_load(base_layout: Path) -> None:
    """As pbtester: a context archive on stdin (unpacked under the user's root) and
    --load into the user's own podman storage."""
    import pwd

    from tests.integration.conftest import rootless_root

    try:
        pw = pwd.getpwnam("pbtester")
    except KeyError:
        from tests.tooling import missing

        missing("test user pbtester is missing (scripts/setup.sh creates it)")
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the test user")
    tool("podman")
    work = traversable_dir("pybuild-compat-rootless-")
    try:
        root = rootless_root(work, "pbtester", base_layout)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"FROM busybox\nRUN id -u > /uid\n"
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        name = f"localhost/pybuild-rootless/{uuid.uuid4().hex[:8]}:1"
        cmd = ["runuser", "-u", "pbtester", "--", "env", f"HOME={pw.pw_dir}",
               f"PYTHONPATH={REPO}", *[f"{k}={v}" for k, v in NO_PROXY.items()],
               sys.executable, "-m", "pybuild", "--root", str(root)]
        proc = subprocess.run([*cmd, "build", "--load", "-t", name, "-"],
                              input=buf.getvalue(), capture_output=True, timeout=300,
                              cwd=work)
        assert proc.returncode == 0, proc.stderr.decode()
        podman = ["runuser", "-u", "pbtester", "--", "env", f"HOME={pw.pw_dir}",
                  tool("podman")]
        try:
            exists = subprocess.run([*podman, "image", "exists", name], check=False)
            assert exists.returncode == 0
        finally:
            subprocess.run([*podman, "rmi", "--force", name], capture_output=True,
                           check=False)
        assert not list((root / "cache" / "inputs").iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)

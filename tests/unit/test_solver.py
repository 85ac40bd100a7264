"""The solver over the FakeExecutor: no kernel, no runtime, real layers in a real store.

Dedupe (within a build and across platforms), cache keys (what hits, what misses, and why),
cancellation, failure propagation, the context-layer shortcut, COPY --link, empty layers,
SOURCE_DATE_EPOCH in keys: each in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.builder.contexts import Contexts
from pybuild.builder.events import Event, Notice, VertexCached, VertexMiss, VertexStarted
from pybuild.builder.ops.base import OpContext
from pybuild.builder.protocols import ExecutorCapabilities, ExecutorNotice
from pybuild.builder.result import Solved
from pybuild.builder.snapshots import Layers, Workspace
from pybuild.builder.solver import SolvePolicy, Solver
from pybuild.cache.store import CacheStore
from pybuild.context.statcache import StatCache
from pybuild.context.tree import BuildContext
from pybuild.errors import StepFailedError, UserError
from pybuild.frontend.dockerfile2llb.convert import compile_dockerfile
from pybuild.frontend.dockerfile2llb.options import FrontendOptions
from pybuild.llb import Definition
from pybuild.oci.platform import Platform, host
from pybuild.resolver import StoreResolver
from pybuild.root import Root
from tests.support.fake_executor import FakeExecutor, FakeRun
from tests.support.images import put_image

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")


class Secrets:
    def __init__(self, values: dict[str, bytes] | None = None) -> None:
        self.values = values or {}

    def get(self, secret_id: str) -> bytes | None:
        return self.values.get(secret_id)


class Agents:
    def socket(self, agent_id: str) -> str | None:
        return None


class Env:
    """A root with a tiny base image, a context dir, a cache, and a solve() that runs a
    Dockerfile's definitions (one per platform) through one Solver on a FakeExecutor."""

    def __init__(self, tmp: Path) -> None:
        self.root = Root(tmp / "root")
        put_image(self.root, "busybox:latest", platforms=(AMD64, ARM64))
        self.root.snapshots.mkdir(parents=True)
        self.root.tmp.mkdir(parents=True)
        self.context = tmp / "ctx"
        self.context.mkdir()
        self.cache = CacheStore(self.root.cache_db)
        self.events: list[Event] = []

    def definitions(self, dockerfile: str, platforms: tuple[Platform, ...] = (AMD64,),
                    **opts: object) -> list[Definition]:
        resolver = StoreResolver(self.root.content, self.root.images, pull="never")
        return [compile_dockerfile(FrontendOptions(
            dockerfile=dockerfile.encode(), platform=p, build_platform=AMD64,
            multi_platform=len(platforms) > 1, **opts), resolver).definition  # type: ignore[arg-type]
            for p in platforms]

    def solver(self, definitions: list[Definition], fake: FakeExecutor, *,
               epoch: int | None = None, no_cache: bool = False,
               secrets: dict[str, bytes] | None = None) -> Solver:
        space = Workspace(workdir=self.root.tmp, snapshots=self.root.snapshots,
                          compression="none", source_date_epoch=epoch)
        context = BuildContext(str(self.context), None, StatCache(None))
        ctx = OpContext(store=self.root.content, executor=fake, space=space,
                        layers=Layers(fake, self.root.content, space, 4),
                        contexts=Contexts(context, {}), events=self.events.append,
                        secrets=Secrets(secrets), ssh=Agents(), sources_dir=self.root.cache_dir,
                        cache_mounts=self.root.cache_mounts, run_slots=asyncio.Semaphore(4))
        return Solver(definitions, ctx=ctx, cache=self.cache,
                      policy=SolvePolicy(no_cache=no_cache, source_date_epoch=epoch,
                                         dockerfile=str(self.context / "Dockerfile")))

    def solve(self, dockerfile: str, fake: FakeExecutor, *,
              platforms: tuple[Platform, ...] = (AMD64,), **kw: object) -> list[Solved]:
        solver = self.solver(self.definitions(dockerfile, platforms), fake, **kw)  # type: ignore[arg-type]
        self.last = solver
        return asyncio.run(solver.solve())

    def misses(self) -> list[str]:
        return [e.reason for e in self.events if isinstance(e, VertexMiss)]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.cache.close()


def test_steps_run_once_and_their_layers_reach_the_store(env: Env) -> None:
    fake = FakeExecutor()
    (solved,) = env.solve("FROM busybox\nRUN echo a\nRUN echo b\n", fake)
    assert fake.commands == ["echo a", "echo b"]
    new = solved.real_layers[-2:]
    for layer in new:
        env.root.content.verify(layer.digest)  # a real blob, digest checked
    assert fake.runs[1].lowers[0].endswith(new[0].snapshot_name)  # the second on the first
    again = FakeExecutor()
    assert env.solve("FROM busybox\nRUN echo a\nRUN echo b\n", again)[0].layers == solved.layers
    assert again.commands == []
    assert sum(isinstance(e, VertexCached) for e in env.events) >= 3


def test_a_shared_stage_runs_once_for_all_platforms(env: Env) -> None:
    """Regression (issue 15 defect 2): a `FROM --platform=$BUILDPLATFORM` stage is one
    vertex of one table, whatever the number of platforms."""
    dockerfile = ("FROM --platform=$BUILDPLATFORM busybox AS b\nRUN make it\n"
                  "FROM busybox\nCOPY --from=b /built /built\n")

    def handler(run: FakeRun) -> int:
        run.write("/built", f"{run.command} {len(run.step.lowers)}")
        return 0

    fake = FakeExecutor(handler)
    amd, arm = env.solve(dockerfile, fake, platforms=(AMD64, ARM64))
    assert fake.commands == ["make it"]
    started = [e.name for e in env.events if isinstance(e, VertexStarted)]
    assert sum("make it" in n for n in started) == 1
    # Both platforms copied the same result: their COPY layers are the same bytes.
    assert amd.real_layers[-1].diff_id == arm.real_layers[-1].diff_id
    assert amd.real_layers[0].digest == arm.real_layers[0].digest  # (one base layer)


def test_an_identical_step_in_two_stages_runs_once(env: Env) -> None:
    fake = FakeExecutor()
    env.solve("FROM busybox AS a\nRUN same\nFROM busybox AS b\nRUN same\n"
              "FROM busybox\nCOPY --from=a /x /a\nCOPY --from=b /x /b\n", fake)
    assert fake.commands == ["same"]


def test_a_changed_input_is_named_and_the_rest_is_reused(env: Env) -> None:
    (env.context / "f.txt").write_text("one")
    dockerfile = "FROM busybox\nCOPY f.txt /f.txt\nRUN cat /f.txt\nRUN echo unrelated\n"
    env.solve(dockerfile, FakeExecutor())
    (env.context / "f.txt").write_text("two")
    env.events.clear()
    fake = FakeExecutor()
    env.solve(dockerfile, fake)
    assert fake.commands == ["cat /f.txt", "echo unrelated"]
    reasons = env.misses()
    assert reasons[0] == "context files changed: f.txt (modified)"
    assert reasons[1] == "changed input: [2/4] COPY f.txt /f.txt"  # not "options changed"


def test_a_changed_instruction_and_a_changed_arg_are_told_apart(env: Env) -> None:
    env.solve("FROM busybox\nARG V=1\nRUN echo $V\n", FakeExecutor())
    env.events.clear()
    env.solve("FROM busybox\nARG V=2\nRUN echo $V\n", FakeExecutor())
    assert env.misses() == ["environment/build args changed: V: '1' -> '2'"]
    env.events.clear()
    env.solve("FROM busybox\nARG V=2\nRUN echo $V again\n", FakeExecutor())
    assert env.misses() == ["the instruction changed (was: RUN echo 2)"]


def test_the_epoch_is_part_of_the_key(env: Env) -> None:
    """A build with another SOURCE_DATE_EPOCH never reuses layers made without it."""
    env.solve("FROM busybox\nRUN stamp\n", FakeExecutor())
    fake = FakeExecutor()
    env.events.clear()
    env.solve("FROM busybox\nRUN stamp\n", fake, epoch=1000)
    assert fake.commands == ["stamp"]
    assert env.misses() == ["SOURCE_DATE_EPOCH changed (unset -> 1000)"]
    again = FakeExecutor()
    env.solve("FROM busybox\nRUN stamp\n", again, epoch=1000)
    assert again.commands == []


def test_a_step_that_changes_nothing_keeps_its_empty_layer(env: Env) -> None:
    """As current BuildKit (testExportedHistory): one layer per RUN and WORKDIR."""
    fake = FakeExecutor(lambda run: 0)
    (solved,) = env.solve("FROM busybox\nRUN true\nWORKDIR /etc\n", fake)
    assert None not in solved.layers and len(solved.layers) == 3
    empty = solved.real_layers[-2]
    assert str(empty.diff_id) == ("sha256:5f70bf18a086007016e948b04aed3b82103a36bea4175"
                                  "5b6cddfaf10ace3c6ef")  # the empty tar everyone writes


def test_copy_link_does_not_depend_on_what_is_below(env: Env) -> None:
    (env.context / "app").write_text("app")
    first = "FROM busybox\nRUN one\nCOPY --link app /app\n"
    env.solve(first, FakeExecutor())
    copies = [c for c in env.last.executed if "COPY" in c]
    assert len(copies) == 1
    env.events.clear()
    fake = FakeExecutor()
    (solved,) = env.solve("FROM busybox\nRUN two\nCOPY --link app /app\n", fake)
    assert fake.commands == ["two"]
    assert not any("COPY" in c for c in env.last.executed)  # the link layer was reused
    assert [m for m in env.misses()] == ["the instruction changed (was: RUN one)"]
    link = fake.calls  # the copy ran on scratch: no lowers below it, ever
    assert all(not c.request.lowers for c in link if c.method == "apply_files")  # type: ignore[attr-defined]
    assert len(solved.layers) == 3


def test_a_failing_step_fails_with_its_output_and_exit_code(env: Env) -> None:
    fake = FakeExecutor()
    fake.on("make", exit_code=2, output="make: *** no rule\n")
    with pytest.raises(StepFailedError) as err:
        env.solve("FROM busybox\nRUN make\n", fake)
    assert err.value.step_exit_code == 2 and "no rule" in err.value.output
    assert err.value.location is not None and err.value.location.start_line == 2


def test_a_failure_stops_the_siblings(env: Env) -> None:
    fake = FakeExecutor()
    fake.on("fail", exit_code=1)
    gate = fake.block("slow")
    dockerfile = ("FROM busybox AS a\nRUN slow\nFROM busybox AS b\nRUN fail\n"
                  "FROM busybox\nCOPY --from=a /x /a\nCOPY --from=b /x /b\n")
    with pytest.raises(StepFailedError):
        env.solve(dockerfile, fake)
    assert fake.cancelled == ["slow"] and gate.count == 1


def test_a_blocked_step_is_cancelled_with_the_build(env: Env) -> None:
    fake = FakeExecutor()
    gate = fake.block("sleep 100")
    solver = env.solver(env.definitions("FROM busybox\nRUN sleep 100\n"), fake)

    async def main() -> None:
        task = asyncio.create_task(solver.solve())
        await gate.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert fake.cancelled == ["sleep 100"]


def test_a_secret_reaches_the_step_and_nothing_else(env: Env) -> None:
    seen: list[bytes] = []

    def handler(run: FakeRun) -> int:
        seen.extend(m.data for m in run.step.mounts if hasattr(m, "data"))
        return 0

    env.solve("FROM busybox\nRUN --mount=type=secret,id=tok use it\n", FakeExecutor(handler),
              secrets={"tok": b"s3cret"})
    assert seen == [b"s3cret"]
    rows = env.cache.all()
    assert rows and all(b"s3cret" not in repr(r).encode() for r in rows)
    with pytest.raises(UserError, match="secret tok not found"):
        env.solve("FROM busybox\nRUN --mount=type=secret,id=tok,required=true use it\n",
                  FakeExecutor(), no_cache=True)


def test_the_context_layer_shortcut_matches_the_general_way(env: Env) -> None:
    data = env.context / "data"
    data.mkdir()
    for i in range(70):  # enough files for the layer to be written before the key
        (data / f"f{i:02d}").write_text(f"{i}\n")
    fake = FakeExecutor()
    (solved,) = env.solve("FROM busybox\nCOPY data/ /data/\n", fake, epoch=0)
    assert not [c for c in fake.calls if c.method == "apply_files"]  # written directly
    assert [c.method for c in fake.calls].count("probe_path") == 1
    assert any("load build context" in e.name for e in env.events
               if isinstance(e, VertexStarted))
    layer = solved.real_layers[-1]
    env.root.content.verify(layer.digest)
    # The general way (a copy run by the executor) copies the same files. (That the bytes
    # are the same as the sandbox's is tests/integration/test_context_layer.py's job.)
    general = FakeExecutor(capabilities=ExecutorCapabilities(probe_path=False))
    (again,) = env.solve("FROM busybox\nCOPY data/ /data/\n", general, epoch=0, no_cache=True)
    assert [c.method for c in general.calls].count("apply_files") == 1
    assert _files(env, again.real_layers[-1]) == _files(env, layer)


def _files(env: Env, layer: object) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(env.root.content.blob_path(layer.digest)) as tar:  # type: ignore[attr-defined]
        return {m.name.rstrip("/"): (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_executor_notices_become_events(env: Env) -> None:
    fake = FakeExecutor(notices=[ExecutorNotice(level="warning", text="snapshotter: copy")])
    env.solve("FROM busybox\nRUN true\n", fake)
    assert any(isinstance(e, Notice) and e.text == "snapshotter: copy" for e in env.events)


def test_mode_min_exports_the_result_chain_and_max_everything(env: Env) -> None:
    env.solve("FROM busybox AS tool\nRUN build tool\nFROM busybox\n"
              "COPY --from=tool /x /x\nRUN final\n", FakeExecutor())
    solver = env.last
    assert len(solver.export_keys("max")) == 3
    assert len(solver.export_keys("min")) == 2  # the tool stage's RUN is not in the image
    assert host()  # (the fixture's platform helper is importable)

"""The FakeExecutor drives the real solver: no kernel, no runtime, real layers in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.builder.events import Event, Notice, VertexCached
from pybuild.builder.solver import Solved, Solver, SolverOptions
from pybuild.cache.store import CacheStore
from pybuild.errors import StepFailedError
from pybuild.frontend.dockerfile2llb.convert import compile_dockerfile
from pybuild.frontend.dockerfile2llb.options import FrontendOptions
from pybuild.oci.platform import host
from pybuild.resolver import StoreResolver
from pybuild.root import Root as PybuildRoot
from tests.support.fake_executor import FakeExecutor, FakeRun
from tests.support.images import put_image


@dataclass
class Root:
    stores: PybuildRoot
    cache: CacheStore
    events: list[Event]

    def solve(self, dockerfile: str, fake: FakeExecutor) -> Solved:
        fe = compile_dockerfile(FrontendOptions(dockerfile=dockerfile.encode(),
                                                platform=host()),
                                StoreResolver(self.stores.content, self.stores.images,
                                              pull="never"))
        roots = self.stores
        roots.tmp.mkdir(parents=True, exist_ok=True)
        opts = SolverOptions(root=roots.path, workdir=roots.tmp, snapshots=roots.snapshots,
                             compression="none", cache_root=str(roots.cache_mounts))
        solver = Solver(fe.definition, store=self.stores.content, cache=self.cache,
                        sandbox=fake, context=None, opts=opts, events=self.events.append)
        return asyncio.run(solver.solve())


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    stores = PybuildRoot(tmp_path / "root")
    put_image(stores, "busybox:latest")  # a tiny stand-in: nothing here runs it
    stores.snapshots.mkdir(parents=True)
    cache = CacheStore(stores.cache_db)
    yield Root(stores, cache, [])
    cache.close()


def test_steps_run_once_and_their_layers_reach_the_store(root: Root) -> None:
    fake = FakeExecutor()
    solved = root.solve("FROM busybox\nRUN echo a\nRUN echo b\n", fake)
    assert fake.commands == ["echo a", "echo b"]
    new = solved.real_layers[-2:]
    for layer in new:
        root.stores.content.verify(layer.digest)  # a real blob, digest checked
    assert new[0].diff_id != new[1].diff_id
    # The second step ran on the first's snapshot.
    assert fake.runs[1].lowers[0].endswith(new[0].snapshot_name)
    # Again: all cached, nothing runs.
    again = FakeExecutor()
    assert root.solve("FROM busybox\nRUN echo a\nRUN echo b\n", again) == \
        Solved(layers=solved.layers, created=solved.created)
    assert again.commands == []
    assert sum(isinstance(e, VertexCached) for e in root.events) >= 3


def test_a_failing_step_fails_with_its_output_and_exit_code(root: Root) -> None:
    fake = FakeExecutor()
    fake.on("make", exit_code=2, output="make: *** no rule\n")
    with pytest.raises(StepFailedError) as err:
        root.solve("FROM busybox\nRUN make\n", fake)
    assert err.value.step_exit_code == 2 and "no rule" in err.value.output


def test_a_handler_decides_what_a_step_writes(root: Root) -> None:
    def handler(run: FakeRun) -> int:
        run.write("/built", run.command)
        run.log("built\n")
        return 0

    fake = FakeExecutor(handler)
    solved = root.solve("FROM busybox\nRUN compile it\n", fake)
    snap = root.stores.snapshots / solved.real_layers[-1].snapshot_name
    assert (snap / "built").read_text() == "compile it"


def test_a_blocked_step_is_cancelled_with_the_build(root: Root) -> None:
    fake = FakeExecutor()
    gate = fake.block("sleep 100")

    async def main() -> None:
        fe = compile_dockerfile(FrontendOptions(dockerfile=b"FROM busybox\nRUN sleep 100\n",
                                                platform=host()),
                                StoreResolver(root.stores.content, root.stores.images,
                                              pull="never"))
        roots = root.stores
        roots.tmp.mkdir(parents=True, exist_ok=True)
        opts = SolverOptions(root=roots.path, workdir=roots.tmp, snapshots=roots.snapshots,
                             compression="none")
        solver = Solver(fe.definition, store=root.stores.content, cache=root.cache,
                        sandbox=fake, context=None, opts=opts, events=root.events.append)
        task = asyncio.create_task(solver.solve())
        await gate.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert fake.cancelled == ["sleep 100"]


def test_notices_become_events(root: Root) -> None:
    from pybuild.builder.protocols import ExecutorNotice

    fake = FakeExecutor(notices=[ExecutorNotice(level="warning", text="snapshotter: copy")])
    root.solve("FROM busybox\nRUN true\n", fake)
    assert any(isinstance(e, Notice) and e.text == "snapshotter: copy" for e in root.events)

"""Unit-test hooks: the `--update-golden` option and the frontend test fixtures.

Golden files live in `testdata/<area>/<case>/`. `pytest tests/unit --update-golden`
rewrites them locally; CI never passes the option, so a mismatch fails there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pybuild.digest import Digest
from pybuild.errors import NotFoundError
from pybuild.frontend.dockerfile2llb.convert import compile_dockerfile
from pybuild.frontend.dockerfile2llb.options import FrontendOptions, FrontendResult
from pybuild.frontend.resolver import ResolvedImage, parse_named_context
from pybuild.oci.config import ContainerConfig, History, ImageConfig
from pybuild.oci.platform import Platform

REPO = Path(__file__).resolve().parents[2]
AMD64 = Platform.parse("linux/amd64")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files under testdata/ instead of comparing")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def golden(update_golden: bool) -> Callable[[Path, Any], None]:
    """Compare `value` (JSON-able) with the golden file, or rewrite it."""

    def check(path: Path, value: Any) -> None:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if update_golden:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"{path} is missing: run pytest tests/unit --update-golden"
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text)

    return check


def _digest(seed: str) -> Digest:
    return Digest.from_bytes(seed.encode())


def image_config(*, env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                            "/usr/bin:/sbin:/bin",),
                 layers: int = 1, os: str = "linux", architecture: str = "amd64",
                 variant: str = "", os_version: str = "", **config: Any) -> ImageConfig:
    diff_ids = tuple(_digest(f"layer-{i}") for i in range(layers))
    history = tuple(History(created_by=f"layer {i}") for i in range(layers))
    return ImageConfig(architecture=architecture, os=os, variant=variant,
                       os_version=os_version, created="2020-01-01T00:00:00Z",
                       config=ContainerConfig(env=env, **config), diff_ids=diff_ids,
                       history=history)


@dataclass
class FakeResolver:
    """An ImageMetaResolver over a dict of reference -> ImageConfig (no builder needed).
    Keys are normalized references (docker.io/library/busybox:latest) or short names."""

    images: dict[str, ImageConfig] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def resolve(self, ref: str, platform: Platform) -> ResolvedImage:
        self.calls.append((ref, str(platform)))
        short = ref.removeprefix("docker.io/library/").removesuffix(":latest")
        cfg = self.images.get(ref) or self.images.get(short)
        if cfg is None:
            raise NotFoundError(f"{ref}: not found")
        name = ref if ref.startswith("oci-layout://") else ref.partition("@")[0]
        return ResolvedImage(name=name, digest=_digest(f"manifest:{ref}:{platform}"),
                             config=cfg)


def default_images() -> dict[str, ImageConfig]:
    return {
        "busybox": image_config(cmd=("sh",)),
        "alpine": image_config(cmd=("/bin/sh",), working_dir="/"),
        "nopath": image_config(env=("FOO=1",)),
        "withuser": image_config(user="app", working_dir="/home/app"),
        "empty": image_config(layers=0),
    }


@dataclass
class Frontend:
    resolver: FakeResolver

    def compile(self, dockerfile: str | bytes, **opts: Any) -> FrontendResult:
        data = dockerfile.encode() if isinstance(dockerfile, str) else dockerfile
        if "build_args" in opts and isinstance(opts["build_args"], dict):
            opts["build_args"] = tuple(opts["build_args"].items())
        if "named_contexts" in opts and isinstance(opts["named_contexts"], dict):
            opts["named_contexts"] = tuple(
                (k, parse_named_context(v)) for k, v in opts["named_contexts"].items())
        opts.setdefault("platform", AMD64)
        opts.setdefault("build_platform", AMD64)
        return compile_dockerfile(FrontendOptions(dockerfile=data, **opts), self.resolver)

    def execs(self, dockerfile: str | bytes, **opts: Any) -> list[Any]:
        """The ExecOps of the result, in dependency order."""
        from pybuild.llb import ExecOp

        r = self.compile(dockerfile, **opts)
        d = r.definition
        return [d.ops[x] for x in d.topological() if isinstance(d.ops[x], ExecOp)]

    def history(self, dockerfile: str | bytes, **opts: Any) -> list[str]:
        return [h.created_by for h in self.compile(dockerfile, **opts).config.history
                if not h.created_by.startswith("layer ")]


@pytest.fixture
def fe() -> Frontend:
    return Frontend(FakeResolver(default_images()))

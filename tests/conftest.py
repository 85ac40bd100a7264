"""Project-wide test hooks: the `requires(...)` capability marker."""

from __future__ import annotations

import pytest

from tests.tooling import require


def pytest_runtest_setup(item: pytest.Item) -> None:
    # @pytest.mark.requires("skopeo", "qemu-aarch64"): skip locally, fail under CI=true.
    for marker in item.iter_markers(name="requires"):
        for capability in marker.args:
            require(str(capability))

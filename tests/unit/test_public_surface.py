"""The public surfaces (`pybuild`, and `pybuild.api` that the CLI builds on) list what
they export, and every name listed loads."""

from __future__ import annotations

import subprocess
import sys

import pybuild
import pybuild.api


def test_every_name_pybuild_exports_loads() -> None:
    for name in pybuild.__all__:
        assert getattr(pybuild, name) is not None, name


def test_the_api_lists_exactly_its_names_and_each_loads() -> None:
    assert sorted(pybuild.api.__all__) == sorted(pybuild.api._HOME)  # (ruff orders __all__)
    for name in pybuild.api.__all__:
        assert getattr(pybuild.api, name) is not None, name
    assert pybuild.api.Builder is pybuild.Builder


def test_an_unknown_name_is_an_attribute_error() -> None:
    for module in (pybuild, pybuild.api):
        try:
            module.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
        except AttributeError as exc:
            assert "NoSuchThing" in str(exc)
        else:
            raise AssertionError(f"{module.__name__}.NoSuchThing resolved")


def test_importing_the_api_loads_nothing_else() -> None:
    """The CLI imports `pybuild.api` on every start: it must cost nothing."""
    code = ("import sys, pybuild.api; "
            "print(sorted(m for m in sys.modules if m.startswith('pybuild')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['pybuild', 'pybuild.api']"

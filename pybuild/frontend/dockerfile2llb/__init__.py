"""Dockerfile -> op DAG + image config, BuildKit's `dockerfile2llb` one concern per module.

`convert.compile_dockerfile` is the entry point and the only module that knows the order of
the phases; the others are free functions over an explicit `DispatchContext` (per build)
and `DispatchState` (per stage), see `state.py`. Kept empty so that importing a small
module here (e.g. `lint`) does not import the whole converter.
"""

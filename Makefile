# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
PYBUILD := $(VENV)/pybuild
BASE := testdata/generated/busybox

.PHONY: setup base demo test lint bench clean

setup:
	@bash scripts/setup.sh

base: setup
	@$(VENV)/python testdata/make_base.py --out $(BASE) --import

demo: base
	@$(PYBUILD) build -t hello:latest --progress plain examples/hello
	@echo
	@echo "image digest: $$($(PYBUILD) inspect hello:latest | $(VENV)/python -c 'import json,sys; print(json.load(sys.stdin)["manifest_digest"])')"
	@echo
	@$(PYBUILD) images

test: setup
	@$(VENV)/ruff check pybuild tests testdata bench
	@$(VENV)/lint-imports
	@$(VENV)/mypy
	@$(VENV)/python -m pytest -n 2 tests

lint: setup
	@$(VENV)/ruff check pybuild tests testdata bench
	@$(VENV)/lint-imports
	@$(VENV)/mypy

bench: base
	@$(VENV)/python bench/run.py

clean:
	rm -rf .venv testdata/generated .pytest_cache

# pxm — the two set-up commands (README): `make demo` and `make test`.
# Each creates the virtual environment it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.pxm-installed

.PHONY: demo demo-full test lint bench clean

$(STAMP): pyproject.toml requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements-lock.txt -e ".[test]"
	touch $(STAMP)

## The main job: a whole simulated Bragg-ptychography beamtime on an embedded Tiled server.
demo: $(STAMP)
	$(VENV)/bin/pxm demo $(ARGS)

## The seed's full 20 × 20 × 42 scan (long).
demo-full: $(STAMP)
	$(VENV)/bin/pxm demo --full $(ARGS)

## The gates (docs/decisions/0007-gates.md): import contracts, ruff, mypy. Also run by .pre-commit-config.yaml.
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## The test suite (the gates of `lint`, then pytest). .ci/run calls exactly this.
## pytest-xdist: TEST_WORKERS processes (2: CI's 2 cores; many tests wait on servers and demos), work stealing
## at the end; each worker's thread pools get cores / workers threads (testing/pytest_threads.py).
## `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) pxm-data .pytest_cache

# One place for the commands the README and CI use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python  ## install metarl (editable) with the test tools
	$(BIN)/pip install -e ".[dev]"

demo: install  ## list the task distributions, then roll a random policy on held-out Meta-World tasks
	$(BIN)/metarl envs list
	$(BIN)/metarl rollout --benchmark ML1-reach-v3 --split test --tasks 2 --episodes 1

test:  ## the full test suite, as CI runs it
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast:  ## skip the slow learning tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check metarl envs agents tests benchmarks examples
	$(BIN)/ruff format --check metarl envs agents tests benchmarks examples
	$(BIN)/mypy

bench:  ## the rollout-engine benchmark (quick version)
	$(BIN)/python benchmarks/sampler.py --quick

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache

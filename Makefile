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

DEMO ?= runs/demo
demo: install  ## train MAML-TRPO briefly on 2-D navigation, evaluate it and an untrained one on held-out goals
	$(BIN)/metarl envs list
	$(BIN)/metarl train maml-trpo --config maml-trpo-point-nav --total-env-steps 800000 --eval-every 0 \
		--out $(DEMO) --overwrite
	$(BIN)/metarl eval $(DEMO)
	$(BIN)/metarl eval $(DEMO) --untrained --json $(DEMO)/untrained/final.json
	$(BIN)/metarl compare $(DEMO) $(DEMO)/untrained/final.json --out $(DEMO)/compare
	@echo "report: $(DEMO)/compare/compare.md (figures beside it); trained agent alone: $(DEMO)/eval/report.md"

test:  ## the full test suite, as CI runs it
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast:  ## skip the slow learning tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check metarl envs agents tests benchmarks examples
	$(BIN)/ruff format --check metarl envs agents tests benchmarks examples
	$(BIN)/mypy

bench:  ## the rollout-engine benchmark (quick version)
	$(BIN)/python benchmarks/speed/sampler.py --quick

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache

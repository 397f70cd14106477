# visionflows: the two commands of the README.
#   make demo   installs into .venv (CPU PyTorch first) and runs `visionflows demo`
#   make test   installs into .venv and runs ruff + the whole test suite (what .ci/run runs)
#   make test-fast   the inner loop: ruff + every test not marked `slow` (under 2 minutes on 2 cores)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build on this project's machines (their pip finds local CPU wheels); torch>=2.3 stays
# open in pyproject. Elsewhere `make TORCH_INDEX=https://download.pytorch.org/whl/cpu ...` takes the CPU wheel
# instead of PyPI's default (CUDA) one.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo demo-quick test test-fast lint docs bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[test,docs]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/visionflows demo

demo-quick: install
	$(BIN)/visionflows demo --quick

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks

docs: install
	$(BIN)/mkdocs build --strict -d site

bench: install
	$(BIN)/python benchmarks/run_all.py

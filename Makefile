# Two commands for a fresh machine: `make quickstart` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export FLWR_TELEMETRY_ENABLED ?= 0
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup quickstart test lint data

setup: $(VENV)/.installed

# torch first (its own step keeps pip's resolver from pulling a newer CUDA build), then the rest.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch>=2.6,<2.15" "torchvision>=0.21,<0.30"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The default settings (wandb offline unless WANDB_MODE says otherwise): what a user gets.
quickstart: setup
	$(VENV)/bin/paralab bench quickstart

# Tests choose their tracking: tests/conftest.py disables wandb for speed, and
# tests/test_default_tracking.py (and the federated tests) run the offline default.
test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Fashion-MNIST for the benchmark suites (Debian/Ubuntu; elsewhere use data.download=true), and
# the files of the stardist wheel (its annotated nuclei image: data=nuclei; never imported).
data: setup
	apt-get install -y dataset-fashion-mnist || sudo apt-get install -y dataset-fashion-mnist
	$(PY) -m pip install -q --no-deps stardist

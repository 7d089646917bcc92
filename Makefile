# The two commands of the README: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench install

$(BIN)/python:
	$(PY) -m venv $(VENV) || (apt-get install -y python3-venv && $(PY) -m venv $(VENV))
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## Start one supernode: embedded defaults, or a cluster replica when DF_REDIS_URL etc. are set.
run: $(VENV)/.installed
	$(BIN)/python -m app

lint: $(VENV)/.installed
	$(BIN)/ruff check app workers tests benchmarks migrations
	$(BIN)/mypy app workers

## Install everything, start Redis if it is not running, lint, type-check and run the whole suite.
test: $(VENV)/.installed
	bash tests/ensure_services.sh
	$(MAKE) lint
	$(BIN)/pytest -q -ra --durations=20

bench: $(VENV)/.installed
	bash tests/ensure_services.sh
	$(BIN)/python -m benchmarks.bench_control_plane

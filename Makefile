# The two commands of the README: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers for `make test`, each taking whole files (tests/conftest.py orders them longest first);
# 0 runs the suite serially in one process.
TEST_WORKERS ?= 2

.PHONY: run test lint bench install image

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
	@# Two runs, both always: the suite in $(TEST_WORKERS) workers, then the `solo` tests (CPU-bound swarms, and a
	@# bound on recovery time, that the other worker's load would distort) on a quiet machine. Red if either is red.
	rc=0; \
	$(BIN)/pytest -q -ra --durations=20 -m "not solo" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder || rc=$$?; \
	$(BIN)/pytest -q -ra --durations=5 -m solo || rc=$$?; \
	exit $$rc

bench: $(VENV)/.installed
	bash tests/ensure_services.sh
	$(BIN)/python -m benchmarks.bench_control_plane

## Build the container image with buildah (one image: replica, worker, migrate). The base is made from
## Debian packages by deploy/image/build-base.sh (cached in buildah's store) unless BASE_IMAGE names one,
## e.g. make image BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
## BUILD_CA: a CA bundle for pip behind a TLS-intercepting proxy (default: $$PIP_CERT), a build secret.
## --isolation chroot: RUN steps need no OCI runtime or cgroups (crun refuses hybrid cgroups on some hosts).
comma := ,
IMAGE ?= localhost/df-supernode:dev
BASE_IMAGE ?=
BUILD_CA ?= $(PIP_CERT)
image:
	bash tests/services/image_tools.sh
	base="$(BASE_IMAGE)"; [ -n "$$base" ] || base="$$(bash deploy/image/build-base.sh | tail -n 1)"; \
	buildah bud --layers --pull=false --isolation chroot --network host --build-arg BASE_IMAGE="$$base" \
	  $(if $(BUILD_CA),--secret id=build_ca$(comma)src=$(BUILD_CA)) -t $(IMAGE) -f Dockerfile .

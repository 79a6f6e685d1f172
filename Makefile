# Plaza: the commands a newcomer types. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
UV ?= uv
PY := $(UV) run --frozen
PROTO_OUT := lib/plaza/src
# Exact district and barri polygons from the shared reference data, when it is there.
PLAZA_CITY_DATA_DIR ?= $(wildcard $(CURDIR)/../shared/data/barcelona)
ifneq ($(PLAZA_CITY_DATA_DIR),)
export PLAZA_CITY_DATA_DIR
endif

.PHONY: help run up down test test-unit lint proto env

help:
	@echo "make run     embedded Plaza: one process, in-memory bus, embedded PostgreSQL, demo feed"
	@echo "make up      distributed Plaza: Kafka, PostgreSQL and five service processes"
	@echo "make down    stop what make up started"
	@echo "make test    lint, unit, integration (real Kafka and PostgreSQL) and end-to-end tests"
	@echo "make proto   regenerate Python code from proto/"

env:
	@command -v $(UV) >/dev/null || { echo "uv not found: pip install uv" >&2; exit 1; }
	$(UV) sync --frozen --all-packages

run: env
	$(PY) plaza run

up: env
	deploy/local/up.sh

down:
	deploy/local/down.sh

proto: env
	$(PY) python scripts/protogen.py $(PROTO_OUT)
	$(PY) python scripts/protocompat.py

lint: env
	$(PY) ruff check .
	$(PY) ruff format --check .
	$(PY) mypy lib/plaza/src services/*/src cli/src

test: lint
	$(PY) pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: env
	$(PY) pytest -p no:cacheprovider tests/unit

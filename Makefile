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

.PHONY: help run up down test test-unit lint proto env train eval dashboards bench profile

help:
	@echo "make run     embedded Plaza: one process, in-memory bus, embedded PostgreSQL, demo feed"
	@echo "make up      distributed Plaza: Kafka, PostgreSQL and five service processes"
	@echo "make down    stop what make up started"
	@echo "make test    lint, unit, integration (real Kafka and PostgreSQL) and end-to-end tests"
	@echo "make test-unit  the unit tests alone (no I/O, seconds)"
	@echo "make lint    ruff and mypy"
	@echo "make env     the environment alone (uv sync)"
	@echo "make proto   regenerate Python code from proto/"
	@echo "make train   train the classifier's service model from ../shared/data"
	@echo "make eval    the model's figures on held-out data (precision, recall, F1, throughput)"
	@echo "make dashboards  regenerate the Grafana dashboards (deploy/grafana) from generate.py"
	@echo "make bench   issue 8's performance figures on real Kafka and PostgreSQL (needs wrk)"
	@echo "make profile where each service spends its CPU in a burst (py-spy samples)"

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

# The tests run on PYTEST_WORKERS pytest-xdist workers, each with its own Kafka broker, PostgreSQL
# and peers (PYTEST_WORKERS=0: one process). A module's tests stay on one worker (loadscope), so
# a module's fixtures (the bench's miniature run) are set up once.
PYTEST_WORKERS ?= 2
PYTEST_XDIST = -n $(PYTEST_WORKERS) --dist loadscope
test: lint
	$(PY) pytest -p no:cacheprovider $(PYTEST_XDIST) --durations=20 $(PYTEST_ARGS)

test-unit: env
	$(PY) pytest -p no:cacheprovider $(PYTEST_XDIST) tests/unit

# The service model: trains from ../shared/data and writes the packaged artifact.
SHARED_DATA ?= $(CURDIR)/../shared/data
train: env
	$(PY) python -m plaza_classifier.train --data $(SHARED_DATA)

# Figures of the committed model on the held-out splits, also written into its MODEL_CARD.md.
eval: env
	$(PY) python -m plaza_classifier.evaluate --data $(SHARED_DATA) --check tests/unit/data/noise_lookalikes.jsonl

dashboards: env
	$(PY) python deploy/grafana/generate.py

# Throughput, latency, the raw aiokafka bound, API load (wrk) and RSS; under 15 minutes. BENCH_ARGS
# passes options, e.g. BENCH_ARGS="--posts 2000 --no-scaling".
bench: env
	$(PY) python -m bench.run $(BENCH_ARGS)

# Where each service's CPU goes in a burst: py-spy samples them, and the functions with the most
# samples are printed; PROFILE_ARGS passes options, e.g. PROFILE_ARGS="--posts 5000".
profile: env
	$(PY) python -m bench.profile $(PROFILE_ARGS)

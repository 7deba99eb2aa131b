# The commands a newcomer needs. Each installs what it needs first.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
# The settings of the full stack on the local services (scripts/services.sh). It listens on
# 127.0.0.1 only, and `flashorder token` in another shell must mint tokens it accepts: the
# development secret, allowed explicitly (the service refuses it with real stores otherwise).
STACK_ENV := FLASHORDER_ALLOW_DEV_SECRET=1 \
	FLASHORDER_DATABASE_URL=mysql+asyncmy://flashorder:flashorder@127.0.0.1:3306/flashorder \
	FLASHORDER_REDIS_URL=redis://127.0.0.1:6379/0 \
	FLASHORDER_KAFKA_BOOTSTRAP=127.0.0.1:9092


.PHONY: run test drills test-fast services services-down stack bench lint fmt install clean openapi \
	chromium asyncapi-tools cluster cluster-down cluster-status cluster-drills promtool

$(UV):
	python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: uv.lock pyproject.toml bench/pyproject.toml | $(UV)
	$(UV) sync --frozen --python python3.11
	touch $@

install: $(VENV)/.installed

## The service on http://127.0.0.1:8000, embedded: no external service needed.
run: install
	$(BIN)/flashorder serve

## The whole test suite against real MariaDB, Redis and Kafka (started here), the fault drills
## included: each stops only servers of its own (a MariaDB and a Redis for tests/drills, a
## Kafka for the Kafka outage), on free ports. The drills on the full topology run apart
## (make cluster-drills).
test: install services chromium asyncapi-tools promtool
	$(BIN)/pytest -m "not cluster_drill"

## promtool (Debian's prometheus package), which checks and unit-tests the alert rules in
## deploy/prometheus. Idempotent.
promtool:
	scripts/promtool.sh

## The fault drills alone: kill -9 of a worker, Redis restarted empty, MariaDB stopped, Kafka
## stopped (each on servers of its own).
drills: install services
	$(BIN)/pytest -m "drill and not cluster_drill" -s

## Unit tests and the embedded API tests only: no services.
test-fast: install chromium asyncapi-tools
	$(BIN)/pytest tests/unit tests/e2e -m "not services"

## Headless Chromium from Debian's packages, for the browser tests (idempotent).
chromium:
	scripts/chromium.sh

## The AsyncAPI validator (npm, pinned by tools/asyncapi/package-lock.json), for its test.
asyncapi-tools: tools/asyncapi/node_modules/.installed

tools/asyncapi/node_modules/.installed: tools/asyncapi/package-lock.json
	cd tools/asyncapi && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

## Rewrite docs/openapi.json from what the service serves (default settings).
openapi: install
	env -u FLASHORDER_MAX_ITEMS_PER_ORDER -u FLASHORDER_MAX_QUANTITY_PER_ITEM \
		-u FLASHORDER_MAX_BODY_BYTES $(BIN)/flashorder openapi > docs/openapi.json

services:
	scripts/services.sh up

services-down:
	scripts/services.sh down

## The full stack on the local services: API workers, relay and projector.
stack: install services
	$(STACK_ENV) scripts/stack.sh

## The service over several hosts on this machine: Redis Cluster (3 masters, 3 replicas),
## three Kafka brokers, API hosts in network namespaces behind HAProxy on 127.0.0.1:$(CLUSTER_LB_PORT)
## (docs/scaling.md). Needs root (namespaces); uses the MariaDB on 127.0.0.1:3306, started if none.
CLUSTER_LB_PORT ?= 8000
cluster: install
	CLUSTER_LB_PORT=$(CLUSTER_LB_PORT) scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

cluster-status:
	scripts/cluster.sh status

## The fault drills on the cluster (a Redis master, a broker, an API host's link, a whole host).
cluster-drills: install
	$(BIN)/pytest -m cluster_drill -s

## The flash-sale benchmark (both strategies, one run) on the full stack; flags in BENCH_ARGS
## (`flashorder-bench --help`; the bench is the workspace member bench/).
bench: install services
	$(STACK_ENV) $(BIN)/flashorder-bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check src bench tests
	$(BIN)/ruff format --check src bench tests
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format src bench tests
	$(BIN)/ruff check --fix src bench tests

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache

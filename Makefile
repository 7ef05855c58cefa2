# etl_app: `make run` serves it, `make test` checks it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DATABASE_URL_TEST ?= postgresql://postgres@127.0.0.1:5432/etl_app_test
export REDIS_URL_TEST ?= redis://127.0.0.1:6379/15

.PHONY: help install run test test-fast lint format services browser bench hosts-demo clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): setup.cfg
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install etl_app with its test tools

run: $(STAMP)  ## migrate and run web, worker, beat and Flower (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/etl-app run

services:  ## make sure the local PostgreSQL and Redis used by the tests are up
	@bash scripts/ensure-services.sh

browser:  ## make sure Debian's chromium, which the browser tests drive, is installed (apt-get when missing)
	@bash scripts/ensure-browser.sh

test: $(STAMP) services browser  ## the whole suite: unit, API, end-to-end, browser and fault tests on real PostgreSQL, Redis and Celery (the fault tests run beside the rest; TEST_PARALLEL=0: one after the other)
	BIN=$(BIN) bash scripts/test-all.sh

test-fast: $(STAMP) services  ## everything but the slow end-to-end and fault tests
	$(BIN)/python -m pytest -m 'not slow'

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) services  ## measure throughput: raw limit, naive baseline, batch, single beside a no-op endpoint, jobs, upload, lookups, outage, ui; prints the ratios (python -m bench --help)
	@$(BIN)/python -c 'import psutil, rich' 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

hosts-demo: $(STAMP)  ## as root: web, workers and beats on three network namespaces, a worker host cut off mid-batch and restored (Redis, then RabbitMQ); prints the figures
	$(BIN)/python -m tests.helpers.partition $(ARGS)

clean:  ## remove .venv and ./var (embedded servers' data)
	rm -rf $(VENV) var

# The two commands of the set-up contract: `make run` and `make test`. Both create the venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Prefect state stays in the project, never in ~/.prefect; no telemetry offline; a fresh
# SQLite database takes 7-19 s to migrate here (the upper end on a busy machine), too close to
# the 20 s default start-up margin.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 60

.PHONY: install run test lint format sandbox asr-quality bench clean chromium serve stop

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,sandbox]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/invox-batch run data/sample/manifest.csv --out out/sample

test: $(STAMP) lint chromium
	@# As root, chmod cannot deny reads and those tests would skip: run them without that privilege.
	@if [ "$$(id -u)" = 0 ] && command -v setpriv >/dev/null; then \
	  setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-dac_override,-dac_read_search \
	    $(BIN)/python -m pytest -q tests/library/test_audio_checks.py tests/library/test_manifest.py -k "unreadable or unreachable"; \
	fi
	$(BIN)/python -m pytest

# Everything, including all 24 seeded crash-matrix iterations (make test runs the first 4).
.PHONY: test-all
test-all: export INVOX_TEST_ALL := 1
test-all: test

# The HTML report test screenshots the page in headless Chromium; without it that test skips.
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	     --no-install-recommends chromium >/dev/null; } \
	  || echo "notice: could not install chromium (not root or apt failed); the HTML screenshot test will skip"

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

sandbox: $(STAMP)
	$(BIN)/invox-batch sandbox

asr-quality: $(STAMP)
	$(BIN)/python -m bench.asr_quality

clean:
	rm -rf $(VENV) .prefect out

bench: $(STAMP)
	$(BIN)/python -m bench.suite

# A real local Prefect stack (server, pool, deployments, a worker, the sandbox); pids and logs
# under .prefect/serve/. `make stop` stops exactly those pids.
serve: $(STAMP)
	$(BIN)/python -m invox_batch.cli.stack serve

stop:
	$(BIN)/python -m invox_batch.cli.stack stop

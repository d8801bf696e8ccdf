# The two commands of the set-up contract: `make run` and `make test`. Both create the venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Prefect state stays in the project, never in ~/.prefect; no telemetry offline; a fresh
# SQLite database takes 14-19 s to migrate here, above the 20 s default start-up margin.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 60

.PHONY: install run test lint format sandbox asr-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/invox-batch transcribe data/sample/manifest.csv

test: $(STAMP) lint
	$(BIN)/python -m pytest

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

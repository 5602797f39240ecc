# vidtok platform: one entry point per job. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Offline-safe defaults for the tools the platform drives.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false

.DEFAULT_GOAL := help
.PHONY: help setup system-deps run test test-all lint bench clean dashboard prefect-up prefect-down

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch and torchvision must be a matching pair (lpips needs torchvision).
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[dev,interop]"
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the project with its dev and interop extras

# The system programs the tests drive, each checked by a command it provides and installed by its Debian package:
# Chromium (dashboard browser tests, through Playwright), FFmpeg (test videos), the PostgreSQL server (Optuna RDB
# tests) and python3-venv (`make setup` on Debian/Ubuntu). As root they are installed with apt; otherwise the missing
# ones are named, and under CI=true that is an error (their tests would fail anyway, later and less clearly).
system-deps:  ## install the system programs the tests drive: Chromium, FFmpeg, PostgreSQL, python3-venv
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "apt-get install$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing:$$missing: run 'sudo apt-get install -y$$missing' (tests that need them fail under CI=true)"; \
		case "$${CI:-}" in 1|true|yes) exit 1;; esac; \
	fi

run: setup  ## the main job: fetch the footage corpus (vidtok data fetch) -> dvc repro -> metrics table
	$(BIN)/vidtok run-pipeline

test: system-deps setup  ## the test suite CI runs (everything but tests marked slow)
	$(BIN)/pytest -m "not slow" --timeout 900

test-all: system-deps setup  ## every test, slow ones included
	$(BIN)/pytest --timeout 1800

lint: setup  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The benchmark set at small sizes, each in its own process (~12 min on 2 cores; after `make run`, which fetches the
# corpus and trains the checkpoint they read). Full sizes and the probes: benchmarks/README.md.
bench: setup  ## the speed and memory benchmarks at small sizes (JSON rows in outputs/bench/results/)
	$(PY) -m benchmarks

dashboard: setup  ## the Streamlit dashboard on http://127.0.0.1:8501 (another data root: VIDTOK_ROOT=DIR make dashboard)
	$(BIN)/streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true --browser.gatherUsageStats false

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

prefect-up:  ## local Prefect server on 127.0.0.1:4200 + the process serving the sweeps (pids and logs in .prefect/)
	@test -x $(BIN)/prefect || $(MAKE) setup
	$(PY) -m flows.local up --port $${PREFECT_PORT:-4200} --home .prefect

prefect-down:  ## stop what prefect-up started
	$(PY) -m flows.local down --home .prefect

# The two commands of the README: `make run` (set up + run the pipeline) and
# `make test` (set up + lint + test). Both create .venv from requirements.lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
PIP_VERSION := 26.3

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: install run test lint browser unit integration e2e ui bench lock clean

$(STAMP): pyproject.toml requirements.lock
	@echo "make: installing $(VENV) from requirements.lock (about 2 minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==$(PIP_VERSION)"
	$(BIN)/python -m pip install --progress-bar off -c requirements.lock -e ".[dev]" \
	  | sed -u -n -E '/^(Collecting|Successfully installed) /p'  # a line per package
	touch $(STAMP)

install: $(STAMP)

run: install
	mlops params check
	dvc repro
	mlops summary

# The suite over the machine's cores (2 in CI), a whole test file per worker so that a
# module's fixtures are built once: 23 min instead of 36 min serially on 2 cores.
TEST_WORKERS ?= 2

test: install lint browser
	pytest -n $(TEST_WORKERS) --dist loadfile

# The browser tests (tests/e2e/test_ui_browser.py) drive the system Chromium: Playwright's
# own browser download is not used. Installed here when missing (as root), else one line.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	  else \
	    echo "make: the browser tests need Chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

lint: install
	ruff check .
	ruff format --check .
	mypy
	lint-imports

unit: install
	pytest tests/unit

integration: install
	pytest tests/integration

e2e: install browser
	pytest tests/e2e

ui: install
	mlops ui

bench: install
	python benchmarks/noop_repro.py
	python benchmarks/cli_startup.py
	python benchmarks/train_overhead.py
	python benchmarks/registry_speed.py
	python benchmarks/sweep_speed.py
	python benchmarks/serving_speed.py
	python benchmarks/serving_flood.py
	python benchmarks/export_size.py
	python benchmarks/image_throughput.py
	python benchmarks/stream_memory.py
	python benchmarks/text_throughput.py
	python benchmarks/text_serving.py
	python benchmarks/batched_serving.py
	python benchmarks/report.py

lock: install
	{ head -n 2 requirements.lock; $(BIN)/pip freeze --exclude-editable \
	  | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' | sort -f; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The two commands of the README: `make demo` and `make test`. Both create
# .venv on first use, with a supported Python (3.11, 3.12 or 3.13, as
# TensorFlow 2.21), and install the exact versions pinned in constraints.txt.

# The first of these that runs and is 3.11-3.13 (a pyenv shim of a version
# that is not installed fails); `make PYTHON=/path/to/python3.12 ...` chooses.
PYTHON_CANDIDATES := python3.11 python3.12 python3.13 python3
SUPPORTED_PYTHON := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
supported = $(shell $(1) -c '$(SUPPORTED_PYTHON)' >/dev/null 2>&1 && echo $(1))
ifndef PYTHON
PYTHON := $(firstword $(foreach python,$(PYTHON_CANDIDATES),$(call supported,$(python))))
endif
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS := --disable-pip-version-check --quiet
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint format lock bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { \
	  echo "error: no Python 3.11, 3.12 or 3.13 found (tried $(PYTHON_CANDIDATES)). Install one, or run 'make PYTHON=/path/to/python3.12 ...'." >&2; exit 1; }
	@$(PYTHON) -c '$(SUPPORTED_PYTHON)' 2>/dev/null || { \
	  echo "error: PYTHON=$(PYTHON) is not a Python 3.11, 3.12 or 3.13 that runs. Pass another, e.g. 'make PYTHON=/path/to/python3.12 ...'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.py constraints.txt
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e ".[test]"
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m svae.demo

# Test processes (pytest-xdist): 2 suits a 2-core machine, where the suite's
# subprocesses and TensorFlow's start-up leave a core idle half the time;
# each process takes up to ~1.5 GB. `make test PYTEST_WORKERS=0` runs one.
PYTEST_WORKERS ?= 2

# The 15 slowest tests are listed at the end: the suite must stay under 15
# minutes on 2 cores, install included.
test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint docker/Dockerfile docker/Dockerfile.gpu

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-pin constraints.txt to what the current setup.py resolves to today.
lock: $(BIN)/python
	rm -rf $(VENV)/lock && $(BIN)/python -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install $(PIP_FLAGS) ".[test]"
	{ echo "# Exact versions that CI tests (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate with \`make lock\` after changing setup.py."; \
	  $(VENV)/lock/bin/pip freeze --exclude svae; } > constraints.txt
	rm -rf $(VENV)/lock

# Every benchmark, each printing ratios against a reference measured in the
# same run; record the results in benchmarks/RESULTS.md. About 20 minutes.
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_distribution.py
	$(BIN)/python benchmarks/bench_train.py --rounds=9
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# The two commands of the README: `make demo` and `make test`. Both create
# .venv with Python 3.11 on first use and install the exact versions pinned in
# constraints.txt.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS := --disable-pip-version-check --quiet
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint format lock bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { \
	  echo "error: $(PYTHON) not found. Install Python 3.11, or run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
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

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest -q tests

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint docker/Dockerfile docker/Dockerfile.gpu

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-pin constraints.txt to what the current setup.py resolves to today.
lock: $(BIN)/python
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
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

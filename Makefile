# `make demo` and `make test` bootstrap .venv from nothing; everything else assumes it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
XPR    := $(VENV)/bin/xpr
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck unit fast cpp clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,trt]'
	touch $(STAMP)

demo: $(STAMP)
	$(XPR) demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check xpr_deploy tests bench
	$(VENV)/bin/ruff format --check xpr_deploy tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# everything CI runs: lint, types, the whole suite (slow paper-size smoke tests included)
test: lint typecheck unit

# the suite without the paper-size smoke tests
fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO_OUT) engines/build .pytest_cache .mypy_cache .ruff_cache

# `make demo` and `make test` bootstrap .venv from nothing; everything else assumes it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
XPR    := $(VENV)/bin/xpr
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=
# the real tritonserver (CPU-capable, Python backend) for xpr serve and tests/test_serve.py, installed
# with --no-deps: its metadata pins numpy<2 (see pyproject.toml's serve extra)
PYTRITON ?= nvidia-pytriton==0.7.0

.PHONY: venv demo test lint typecheck unit fast cpp clean gpu-wheels

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,trt,serve]'
	$(PY) -m pip install --quiet --no-deps $(PYTRITON)
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

# C/C++ runtime (engines/): Debian packages, ONNX Runtime headers + library into
# engines/third_party/, Release build (engines/build/xpr_infer), ctest, then the unit and
# bad-input tests again under AddressSanitizer + UBSan (engines/build/asan). 2 cores: -j2.
CPP_JOBS ?= 2
cpp: $(STAMP)
	engines/scripts/install_deps.sh
	engines/scripts/fetch_onnxruntime.sh
	cmake -S engines -B engines/build -DCMAKE_BUILD_TYPE=Release -DXPR_PYTHON=$(abspath $(PY))
	cmake --build engines/build -j$(CPP_JOBS)
	cd engines/build && ctest --output-on-failure
	cmake -S engines -B engines/build/asan -DCMAKE_BUILD_TYPE=Debug -DXPR_SANITIZE=address,undefined \
	  -DXPR_PYTHON=$(abspath $(PY))
	cmake --build engines/build/asan -j$(CPP_JOBS)
	cd engines/build/asan && ctest --output-on-failure

# the pure-Python wheels that bench/gpu_run.sh installs on the lent GPU machine (no network there);
# carried by the device call as bench/.gpu-wheels (ignored). bench/README.md#gpu
gpu-wheels:
	rm -rf bench/.gpu-wheels && mkdir -p bench/.gpu-wheels
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
	  --abi none --platform any -d bench/.gpu-wheels -r bench/gpu-wheels.txt
	du -sh bench/.gpu-wheels

clean:
	rm -rf $(DEMO_OUT) engines/build .pytest_cache .mypy_cache .ruff_cache

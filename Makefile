# `make demo` and `make test` bootstrap .venv from nothing; everything else assumes it.
# `make test`, `make cpp` and `make cpp-fuzz` install the Debian packages they need (as root) through
# scripts/system_deps.sh; .ci/run calls the same targets.
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

.PHONY: venv demo test lint typecheck unit fast sysdeps cpp cpp-trt-check cpp-fuzz clean gpu-wheels

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

# the Debian packages of the whole suite: C++ toolchain + libraries (tests/test_engines_cpp.py builds
# engines/), dicom3tools, orthanc + orthanc-dicomweb; installs only what is missing
sysdeps:
	scripts/system_deps.sh test

# two pytest-xdist workers (CI has 2 cores); tests/conftest.py's scheduler hands out whole modules (or groups of
# modules sharing a session bundle), the longest first (--dist loadgroup selects it). PYTEST_WORKERS=0: one process.
# Tests marked `serial` (OHIF drawing in headless Chromium: under the other worker's load it draws
# nothing within its bound) run afterwards, alone. Exit 5 (nothing selected, e.g. by -k) is not a failure.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup)
PYTEST_OK = rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc

unit: $(STAMP) sysdeps
	$(PY) -m pytest $(XDIST) -m "not serial" $(PYTEST_ARGS); $(PYTEST_OK)
	$(PY) -m pytest -m serial $(PYTEST_ARGS); $(PYTEST_OK)

# everything CI runs: lint, types, the whole suite (slow paper-size smoke tests included)
test: lint typecheck unit

# the suite without the paper-size smoke tests
fast: $(STAMP) sysdeps
	$(PY) -m pytest $(XDIST) -m "not slow and not serial" $(PYTEST_ARGS); $(PYTEST_OK)
	$(PY) -m pytest -m "serial and not slow" $(PYTEST_ARGS); $(PYTEST_OK)

# C/C++ runtime (engines/): Debian packages, ONNX Runtime headers + library into
# engines/third_party/, Release build (engines/build/xpr_infer), ctest, then the unit and
# bad-input tests again under AddressSanitizer + UBSan (engines/build/asan), there with the hostile-input
# corpus through xpr_infer (ctest fuzz_infer: engines/tests/fuzz_infer.py; its tally is printed). 2 cores: -j2.
# fuzz_infer is time-boxed: FUZZ_INFER_SECONDS of a campaign drawn and ordered by a new seed each run (printed
# with the tally, for a replay); the whole fixed campaign (about 2500 cases, 7 min here):
# `make cpp FUZZ_INFER_SEED=0 FUZZ_INFER_SECONDS=0`
CPP_JOBS ?= 2
FUZZ_INFER_SECONDS ?= 150
FUZZ_INFER_SEED ?=
cpp: $(STAMP)
	scripts/system_deps.sh cpp
	XPR_PYTHON=$(abspath $(PY)) engines/scripts/fetch_onnxruntime.sh
	cmake -S engines -B engines/build -DCMAKE_BUILD_TYPE=Release -DXPR_PYTHON=$(abspath $(PY))
	cmake --build engines/build -j$(CPP_JOBS)
	cd engines/build && ctest --output-on-failure
	cmake -S engines -B engines/build/asan -DCMAKE_BUILD_TYPE=Debug -DXPR_SANITIZE=address,undefined \
	  -DXPR_PYTHON=$(abspath $(PY))
	cmake --build engines/build/asan -j$(CPP_JOBS)
	seed=$(FUZZ_INFER_SEED); cd engines/build/asan && XPR_FUZZ_INFER_SEED=$${seed:-$$(( $$(date +%s) % 100000 + 1 ))} \
	  XPR_FUZZ_INFER_BUDGET=$(FUZZ_INFER_SECONDS) ctest --output-on-failure
	@cat engines/build/asan/tests/fuzz_infer/tally.txt

# the TensorRT backend (never linked here: no TensorRT library installs) compiled against TensorRT 11.1's
# headers (../shared/third_party/tensorrt-11.1, or TRT_ROOT) + CUDA headers from pinned PyPI wheels, -Werror
cpp-trt-check: $(STAMP)
	XPR_PYTHON=$(abspath $(PY)) engines/scripts/trt_check.sh

# libFuzzer (clang from Debian): fuzz_manifest (manifest parser + seal) and fuzz_preprocess (DICOM decode +
# preprocessing) with -fsanitize=fuzzer,address,undefined, seeded from the hostile-input corpus, each for
# FUZZ_SECONDS; a crash fails the target (its input: engines/build/fuzz/artifacts/, to keep as a
# regression seed in engines/fuzz/regressions/, which ctest replays in every build)
FUZZ_SECONDS ?= 60
FUZZ_BUILD := engines/build/fuzz
cpp-fuzz: $(STAMP)
	scripts/system_deps.sh cpp fuzz
	XPR_PYTHON=$(abspath $(PY)) engines/scripts/fetch_onnxruntime.sh
	CC=clang CXX=clang++ cmake -S engines -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXPR_FUZZ=ON \
	  -DXPR_SANITIZE=address,undefined -DXPR_PYTHON=$(abspath $(PY))
	cmake --build $(FUZZ_BUILD) -j$(CPP_JOBS) --target fuzz_manifest fuzz_preprocess
	$(PY) engines/fuzz/make_seeds.py $(FUZZ_BUILD)/seeds
	engines/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# the pure-Python wheels that bench/gpu_run.sh installs on the lent GPU machine (no network there);
# carried by the device call as bench/.gpu-wheels (ignored). bench/README.md#gpu
gpu-wheels:
	rm -rf bench/.gpu-wheels && mkdir -p bench/.gpu-wheels
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
	  --abi none --platform any -d bench/.gpu-wheels -r bench/gpu-wheels.txt
	du -sh bench/.gpu-wheels

clean:
	rm -rf $(DEMO_OUT) engines/build .pytest_cache .mypy_cache .ruff_cache

#!/usr/bin/env bash
# bench/gpu.py on the lent GPU machine, as ONE device `run` call made from the repository root:
#   command: bash bench/gpu_run.sh      carry: ["bench/.gpu-wheels"]      timeout_s: 420
# Before it, here: `make gpu-wheels` (the pure-Python wheels that machine lacks: bench/gpu-wheels.txt).
# What comes back from $OUT: gpu-h200.json (copy it to bench/results/), gpu-log.txt, gpu-smi.txt.
# Extra arguments go to bench/gpu.py (e.g. --skip compile --deadline 200 for a shorter rerun).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out="${OUT:-$PWD/bench/results}"
if ! ls bench/.gpu-wheels/*.whl >/dev/null 2>&1; then
  echo "bench/gpu_run.sh: no wheels in bench/.gpu-wheels: run 'make gpu-wheels' here and carry that folder" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/xpr-site \
  bench/.gpu-wheels/*.whl || exit 2
export PYTHONPATH="/tmp/xpr-site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$out/gpu-smi.txt" 2>&1 || true
python3 bench/gpu.py --out "$out/gpu-h200.json" "$@" 2>&1 | tee "$out/gpu-log.txt"
exit "${PIPESTATUS[0]}"

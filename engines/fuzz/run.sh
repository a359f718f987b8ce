#!/usr/bin/env bash
# Runs the libFuzzer targets of a fuzz build for a bounded time each (`make cpp-fuzz`).
#   engines/fuzz/run.sh BUILD SECONDS     (BUILD: the XPR_FUZZ=ON build folder, with seeds/ from make_seeds.py)
# Corpus: BUILD/corpus/<target>/ (grows), read-only seeds BUILD/seeds/<target>/ and regressions/<target>/.
# A crash, leak, timeout (> 10 s) or out-of-memory input stops the target, is written to
# BUILD/artifacts/ and fails this script: fix it, then keep the input in engines/fuzz/regressions/<target>/.
set -euo pipefail
build="$1"
secs="${2:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
mkdir -p "$build/artifacts"
status=0
for t in manifest preprocess; do
  mkdir -p "$build/corpus/$t"
  log="$build/fuzz_$t.log"
  start=$SECONDS
  if "$build/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t-" "$build/corpus/$t" "$build/seeds/$t" "$here/regressions/$t" \
       >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 || true)
    echo "cpp-fuzz: fuzz_$t: $runs inputs in $((SECONDS - start)) s, ${cov:-cov: ?} edges, no crash"
  else
    status=1
    echo "cpp-fuzz: fuzz_$t FAILED after $((SECONDS - start)) s (log $log):"
    grep -v '^#[0-9]' "$log" | tail -n 60
    ls -1 "$build"/artifacts/"$t"-* 2>/dev/null | sed 's/^/  input: /'
  fi
done
exit $status

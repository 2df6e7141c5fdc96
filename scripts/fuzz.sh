#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`, clang 14) and runs each for a
# time budget (`make fuzz`).
#
#   scripts/fuzz.sh [TARGET...]     default: every fuzz/fuzz_*.cpp
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_JOBS      targets run at the same time (default 1; CI uses 2 on 2 cores)
#   FUZZ_OUT       logs, grown corpora and crash artifacts (default build/fuzz-out)
#   FUZZ_NO_BUILD  1: use the binaries already in build/fuzz
#
# Each target starts from its committed seed corpus fuzz/corpus/NAME (copied,
# the repository is never written) with its dictionary fuzz/fuzz_NAME.dict.
# A crash, a leak, a sanitizer report or an input running longer than 30 s
# stops that target and keeps the input as FUZZ_OUT/NAME/crash-* (or leak-*,
# timeout-*, oom-*); reproduce with `build/fuzz/fuzz/fuzz_NAME FILE`.
# Prints one summary line per target (runs, runs/s, coverage) and exits 1
# when any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
out=${FUZZ_OUT:-build/fuzz-out}

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_*.cpp; do
    t=$(basename "$f" .cpp)
    targets+=("$t")
  done
fi

# UBSan findings must stop the target like ASan ones (the preset also builds
# with -fno-sanitize-recover=undefined).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  set +e +o pipefail  # runs in its own background subshell: report, never stop early
  local t=$1 name=${1#fuzz_}
  local dir=$out/$name
  rm -rf "$dir"
  mkdir -p "$dir/corpus" || return 1
  cp fuzz/corpus/"$name"/* "$dir/corpus/" || return 1
  local rc=0
  build/fuzz/fuzz/"$t" -max_total_time="$secs" -dict=fuzz/"$t".dict -max_len=4096 -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" \
    >"$dir.log" 2>&1 || rc=$?
  local runs speed cov
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir.log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$dir.log" | tail -1 | cut -d' ' -f2)
  if [ "$rc" -ne 0 ]; then
    echo "FAIL $t (exit $rc): $(ls "$dir"/ | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | head -3 | tr '\n' ' ')log $dir.log"
    grep -E 'ERROR: |runtime error|SUMMARY' "$dir.log" | head -5 | sed 's/^/    /'
    return 1
  fi
  echo "ok   $t: ${runs:-?} runs, ${speed:-?} runs/s, cov: ${cov:-?}, corpus $(ls "$dir/corpus" | wc -l) inputs"
}

mkdir -p "$out"
echo "fuzzing ${#targets[@]} targets for ${secs}s each, $jobs at a time (logs in $out)"
failed=0
pids=()
names=()
wait_one() {
  # Waits for the oldest running target.
  if ! wait "${pids[0]}"; then failed=1; fi
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
}
for t in "${targets[@]}"; do
  if [ ! -f fuzz/"$t".cpp ]; then
    echo "no such fuzz target: $t" >&2
    exit 2
  fi
  while [ "${#pids[@]}" -ge "$jobs" ]; do wait_one; done
  run_one "$t" &
  pids+=($!)
  names+=("$t")
done
while [ "${#pids[@]}" -gt 0 ]; do wait_one; done
if [ "$failed" -ne 0 ]; then
  echo "fuzzing FAILED: see the FAIL lines above" >&2
  exit 1
fi
echo "fuzzing passed"

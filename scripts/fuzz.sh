#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`) and runs each for FUZZ_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
for t in fuzz_session fuzz_line_reader fuzz_client_reply fuzz_msgid fuzz_proxy; do
  name=${t#fuzz_}
  work=$(mktemp -d)
  cp fuzz/corpus/"$name"/* "$work"/
  echo "== $t for ${secs}s"
  build/fuzz/fuzz/"$t" -max_total_time="$secs" -dict=fuzz/"$t".dict -max_len=4096 "$work"
  rm -rf "$work"
done

#!/usr/bin/env bash
# Side-by-side benchmark of apop against Dovecot (issue 7): installs what is
# missing (dovecot-pop3d, fetchmail ... via scripts/deps.sh), builds the
# release binary, raises the descriptor limit and runs bench/compare.py.
#   bench/compare.sh                 full sizes (see docs/performance.md; ~15 min)
#   bench/compare.sh --quick         tiny sizes, a smoke run
#   bench/compare.sh --only 1,2 --json out.json
# Sizes: flags of compare.py or BENCH_<NAME> variables (compare.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ -z "${APOP_BIN:-}" ]; then
  cmake --preset release >/dev/null
  cmake --build --preset release
  APOP_BIN=build/release/apop
fi
# 10,000 sessions need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/compare.py --apop "$APOP_BIN" "$@"

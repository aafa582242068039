#!/usr/bin/env bash
# Runs the test suite with Node's test runner on the project's Node.
#   scripts/test.sh unit   tests that need no service (*.test.ts, not *.it.test.ts)
#   scripts/test.sh all    starts the real services (scripts/services.sh up), then every test;
#                          *.serial.it.test.ts (they stop and restart services) run last, one by one
# Extra arguments are passed to `node --test` (e.g. --test-name-pattern=...).
# Fails when a test fails and when no test ran at all.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
shift || true

shopt -s globstar nullglob
files=()
serial=()
# examples/*/test: the examples' own tests, run as a user's project would (importing `cairn`).
for f in test/**/*.test.ts examples/*/test/**/*.test.ts; do
  if [[ $f == *.it.test.ts && $mode == unit ]]; then continue; fi
  if [[ $f == *.serial.it.test.ts ]]; then serial+=("$f"); else files+=("$f"); fi
done
if [[ $mode == all ]]; then
  # Tidy: stop afterwards what this run had to start (CAIRN_KEEP_SERVICES=1 keeps them).
  if ! bash scripts/services.sh status >/dev/null 2>&1 && [[ ${CAIRN_KEEP_SERVICES:-0} != 1 ]]; then
    trap 'bash scripts/services.sh down >/dev/null 2>&1 || true' EXIT
  fi
  bash scripts/services.sh up
  eval "$(bash scripts/services.sh env)"
  # The console's browser test drives Debian's chromium (installed when missing).
  CAIRN_CHROMIUM=$(bash scripts/browser.sh)
  export CAIRN_CHROMIUM
elif [[ $mode != unit ]]; then
  echo "usage: scripts/test.sh unit|all [node --test options]" >&2
  exit 2
fi
if ((${#files[@]} == 0)); then
  echo "no test files found" >&2
  exit 1
fi

status=0
ran=0
# Runs one batch of files; adds its test count to $ran and keeps the first failure in $status.
run_batch() {
  local concurrency=$1 log count rc
  shift
  log=$(mktemp)
  set +e
  # `cairn-source`: the package's own name resolves to its sources (package.json exports), so
  # the examples import `cairn` as users do, without a build.
  node --conditions=cairn-source --test --test-reporter=spec --test-timeout=300000 --test-concurrency="$concurrency" "${extra[@]}" "$@" 2>&1 |
    tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc != 0 && status == 0)); then status=$rc; fi
  count=$(sed -n 's/^ℹ tests \([0-9][0-9]*\)$/\1/p' "$log" | tail -n 1)
  rm -f "$log"
  ran=$((ran + ${count:-0}))
}
extra=("$@")
run_batch 2 "${files[@]}"
if ((${#serial[@]} > 0)); then run_batch 1 "${serial[@]}"; fi
if ((ran == 0)); then
  echo "test run failed: no test ran" >&2
  exit 1
fi
echo "tests run: $ran"
exit "$status"

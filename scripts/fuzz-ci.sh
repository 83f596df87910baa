#!/usr/bin/env bash
# CI: every fuzz target for a short, bounded time, from its seed corpus:
# FUZZ_SECONDS each (20 by default), after one build of them all. Catches
# a parser change that panics on input near the tests'; long runs are
# scripts/fuzz.sh's. Prints each target's runs; on a crash, the end of
# libFuzzer's report (the panic, the input's file) and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(scripts/fuzz.sh list); do
    if scripts/fuzz.sh "$target" "$seconds" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $target: ${runs:-?} runs in ${seconds}s, no crash"
    else
        tail -n 60 "$log" >&2
        echo "fuzz $target: failed (above)" >&2
        exit 1
    fi
done

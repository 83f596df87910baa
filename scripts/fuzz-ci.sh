#!/usr/bin/env bash
# CI: fuzz targets for a short, bounded time, from their seed corpus:
# FUZZ_SECONDS each (20 by default). Catches a parser change that panics
# on input near the tests'; long runs are scripts/fuzz.sh's. Prints each
# target's runs; on a crash, the end of libFuzzer's report (the panic, the
# input's file) and a non-zero exit.
#
# FUZZ_TARGETS says which (default: the SMTP crate's three, whose build is
# small; the engine's two, journal_recovery and config, build its whole
# dependency tree with instrumentation, about 11 CPU-minutes on this
# machine, more than CI's time allows: `FUZZ_TARGETS="journal_recovery
# config" scripts/fuzz-ci.sh` runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
targets=${FUZZ_TARGETS:-smtp_server reply_parser address}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $targets; do
    if scripts/fuzz.sh "$target" "$seconds" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $target: ${runs:-?} runs in ${seconds}s, no crash"
    else
        tail -n 60 "$log" >&2
        echo "fuzz $target: failed (above)" >&2
        exit 1
    fi
done

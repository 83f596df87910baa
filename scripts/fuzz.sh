#!/usr/bin/env bash
# Runs one fuzz target (fuzz/fuzz_targets/TARGET.rs) for SECONDS with
# libFuzzer, through cargo-fuzz, on the stable toolchain.
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER-FLAGS...]
#   scripts/fuzz.sh list                 # the targets
#   FUZZ_SANITIZER=address scripts/fuzz.sh smtp_server 60
#
# cargo-fuzz builds with `-Z` flags (the coverage instrumentation, the
# sanitizer) that only a nightly rustc takes; RUSTC_BOOTSTRAP=1 lets the
# stable one take them. The code under test is safe Rust, so the default
# is no sanitizer (`none`), about twice as many runs a second; overflow
# checks and debug assertions are on. The seeds in fuzz/corpus/TARGET are
# read, never written: what a run finds goes to fuzz/target/corpus/TARGET
# and is kept for the next run. A crash stops the run with a non-zero
# exit; cargo-fuzz prints the input's file (under fuzz/artifacts/TARGET)
# and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions)

if [ "${1:-}" = list ]; then
    exec cargo fuzz list
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [LIBFUZZER-FLAGS...] | $0 list" >&2
    exit 2
fi
target=$1 seconds=$2
shift 2
work=fuzz/target/corpus/$target
mkdir -p "$work"
# -timeout: one input running longer than 10 s is a hang, reported as a crash.
# -rss_limit_mb: more memory than that is a finding too.
# The engine's targets need the crate's `engine` feature.
case $target in
journal_recovery | config | inject_request) flags+=(--features engine) ;;
esac
cargo fuzz run "${flags[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"

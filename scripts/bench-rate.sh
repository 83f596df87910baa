#!/usr/bin/env bash
# Rate-control benchmark (issue 6), in one go on one machine:
#  1. the `realistic` and `hostile` scenarios through Volley, adaptive
#     (the default) and static (fixed 20 connections per domain, no rate
#     limit): aggregate delivery rate against the sum of the domains' hidden
#     capacities, throttling replies per delivery;
#  2. one domain whose capacity halves at 20 s and doubles back at 40 s:
#     how long Volley takes to settle under it, and to climb back.
# Reports (JSON + HTML with charts) go to OUT (default bench-out/rate).
#
#   scripts/bench-rate.sh                  # all of it
#   SCENARIOS=realistic scripts/bench-rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-out/rate}
SCENARIOS=${SCENARIOS:-realistic hostile}
cargo build --release --quiet --bin volley
BIN=target/release/volley
mkdir -p "$OUT"

reports=()
for s in $SCENARIOS; do
    for mode in adaptive static; do
        echo "== $s / $mode"
        "$BIN" bench run "$s" --quiet --timeout 180s --label "volley-$mode" \
            --volley-config "scripts/rate-$mode.toml" --out "$OUT/$s-$mode" \
            | tail -n 20 || true
        reports+=("$OUT/$s-$mode/report.json")
    done
    "$BIN" bench compare "$OUT/$s-static/report.json" "$OUT/$s-adaptive/report.json" || true
done

echo "== halving / adaptive"
"$BIN" bench run scripts/rate-halving.toml --quiet --timeout 180s --label volley-adaptive \
    --volley-config scripts/rate-adaptive.toml --out "$OUT/halving-adaptive" | tail -n 20 || true
reports+=("$OUT/halving-adaptive/report.json")

echo "== figures"
for s in $SCENARIOS; do
    scripts/rate-figures.py summary "bench/scenarios/$s.toml" "$OUT/$s-adaptive/report.json" "$OUT/$s-static/report.json"
done
scripts/rate-figures.py summary scripts/rate-halving.toml "$OUT/halving-adaptive/report.json"
scripts/rate-figures.py settle "$OUT/halving-adaptive/report.json" big.test 20 150
for r in realistic-adaptive realistic-static hostile-adaptive halving-adaptive; do
    scripts/rate-figures.py svg "$OUT/$r/report.html" "$OUT/$r/chart" > /dev/null || true
done
echo "charts: $OUT/*/chart-N.svg"

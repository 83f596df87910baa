#!/bin/sh
# The journal's power-loss simulation, longer than the unit test runs it:
# RUNS seeded runs (default 100000) from seed FIRST (default 0), in release,
# on THREADS threads (default: every core). Each run cuts the power at
# random points of a simulated disk and checks that nothing acknowledged is
# lost and nothing durably finished is delivered again. A failure names its
# seed; rerun it alone with `scripts/powerloss.sh 1 SEED 1`.
#
#   scripts/powerloss.sh [RUNS] [FIRST] [THREADS]
set -e
cd "$(dirname "$0")/.."
SIM_RUNS=${1:-100000} SIM_SEED=${2:-0} SIM_THREADS=${3:-$(nproc)} \
    exec cargo test --release -p volley-engine --lib \
    journal::sim::power_cuts_at_random_points_lose_nothing_acknowledged -- --exact --nocapture

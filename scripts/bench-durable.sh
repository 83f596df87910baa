#!/bin/sh
# Durable fast mode against in-memory fast mode in the same run, and the
# bytes the journal writes per body byte. Figures, not a test: see the
# README ("Durable mode figures").
#
#   scripts/bench-durable.sh [MESSAGES] [SESSIONS] [BODY_BYTES] [JOURNAL_DIR]
#
# JOURNAL_DIR (default target/durable-bench) must be on a real disk.
set -e
cd "$(dirname "$0")/.."
exec cargo run --release -p volley-engine --example durable_throughput -- "$@"

#!/usr/bin/env bash
# The soak (issue 18): Volley in durable mode (release build) under a
# Composer at 70% of the simulated internet's capacity for MINUTES minutes
# (default 30), with a fault every minute (drops after the data, MX hosts
# down, DNS timing out, a receiver's capacity halved: each for 30 s, each
# at its own receiver) and a kill -9 every 3 minutes; a line per minute
# (RSS, queued, accepted, delivered, throttling) and the accounting at the
# end. Exits non-zero when a message is lost, a duplicate falls outside
# the window of a kill, a fault's queue has not drained before the next,
# or memory after warm-up spreads more than 10%. Loopback only; it stops
# by itself. Extra arguments go to `volley bench soak` (see --help).
#
#   scripts/soak.sh [MINUTES] [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
shift || true
if [ "${PROFILE:-release}" = release ]; then
    cargo build --release --quiet -p volley
else
    cargo build --quiet -p volley
fi
ulimit -n 20000 2>/dev/null || true
exec "target/${PROFILE:-release}/volley" bench soak --duration "${MINUTES}m" --out "${OUT:-soak-out}" "$@"

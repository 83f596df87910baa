#!/usr/bin/env bash
# Relay benchmark (issue 4), in one go on one machine:
#  1. direct: a Composer sends MESSAGES 2 KB messages over 100 domains
#     straight into the MX sinks of the simulated internet, acting as its own
#     MTA: each message goes over a connection to its domain's MX host (the
#     routes the internet writes), the connections spread evenly over the
#     100 sink addresses. Swept over DIRECT_CONNECTIONS; the best rate is the
#     baseline.
#  2. the same messages through `volley serve` (fast mode), which opens
#     its own connections to the same sinks; the Composer's connections to
#     Volley swept over CONNECTIONS, the best end-to-end rate counts.
#  3. memory per queued recipient with the sinks paused (1,000,000
#     recipients over 1,000 domains by default).
# Every run gets a fresh simulated internet. Rates are the sinks' own: from
# the first message's send stamp (written by the Composer into the message)
# to the last acceptance by a sink, once the sinks hold MESSAGES messages;
# `volley bench check` then proves each message arrived exactly once and
# unchanged. Goals: Volley's best rate >= 50% of the best direct rate; <= 256
# bytes per queued recipient beyond its body bytes.
#
#   scripts/bench-relay.sh      # MESSAGES=200000 DIRECT_CONNECTIONS="32 128 400" CONNECTIONS="32 128" SHARDS=2
#   MESSAGES=50000 MEMORY_RECIPIENTS=100000 scripts/bench-relay.sh
#   STATIC=1 scripts/bench-relay.sh   # also adaptive = false (scripts/relay-static.toml) at the best Composer count
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-200000}
DIRECT_CONNECTIONS=${DIRECT_CONNECTIONS:-32 128 400}
CONNECTIONS=${CONNECTIONS:-32 128}
SHARDS=${SHARDS:-2}
MEMORY_RECIPIENTS=${MEMORY_RECIPIENTS:-1000000}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
SCENARIO=${SCENARIO:-scripts/relay-bench.toml}
STATIC=${STATIC:-}

PROFILE=${PROFILE:-release} # debug: only to try the script out
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo_build --bin volley
cargo_build -p volley-engine --example queue_memory
BIN=target/$PROFILE/volley

echo "== load: $(uptime)"
BEST=0
BEST_C=
DIRECT_RATES=
for c in $DIRECT_CONNECTIONS; do
    echo "== 1. direct: Composer -> the sinks ($MESSAGES messages, $c connections over the MX hosts)"
    start_internet "direct$c"
    "$BIN" bench compose --scenario "$SCENARIO" --routes "$TMP/direct$c.routes" \
        --messages "$MESSAGES" --connections "$c" --sent-out "$TMP/direct$c.sent" \
        2>/dev/null | grep '^compose'
    finish_run "direct$c"
    DIRECT_RATES="$DIRECT_RATES $c:$RATE"
    if awk -v r="$RATE" -v b="$BEST" 'BEGIN {exit !(r > b)}'; then
        BEST=$RATE
        BEST_C=$c
    fi
done

VBEST=0
VBEST_C=
VOLLEY_RATES=
for c in $CONNECTIONS; do
    echo "== 2. through Volley: Composer ($c connections) -> volley serve ($SHARDS shards, fast) -> the sinks"
    start_internet "volley$c"
    "$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" --delivery-port "$PORT" \
        --nameserver "$DNS" --summary-interval 1s >"$TMP/serve$c.out" 2>"$TMP/serve$c.err" &
    SERVE=$!
    VADDR=$(listen_address "$TMP/serve$c.err")
    "$BIN" bench compose --scenario "$SCENARIO" --target "$VADDR" \
        --messages "$MESSAGES" --connections "$c" --sent-out "$TMP/volley$c.sent" \
        2>/dev/null | grep '^compose' | tee "$TMP/ingest$c.out"
    finish_run "volley$c"
    kill -TERM "$SERVE"
    wait "$SERVE" || true
    PEAKS=$(grep ' msgs / ' "$TMP/serve$c.err" | tail -n 1 | grep -o 'queued [0-9]* (peak [0-9]*) | conns [0-9]* (peak [0-9]*)' || true)
    echo "volley: $PEAKS"
    VOLLEY_RATES="$VOLLEY_RATES $c:$RATE"
    if awk -v r="$RATE" -v b="$VBEST" 'BEGIN {exit !(r > b)}'; then
        VBEST=$RATE
        VBEST_C=$c
        INGEST=$(grep -o '= [0-9.]* msg/s' "$TMP/ingest$c.out" | awk '{print $2}')
        VPEAKS=$PEAKS
    fi
done
VOLLEY=$VBEST
RATIO=$(awk -v e="$VOLLEY" -v d="$BEST" 'BEGIN {printf "%.0f", 100 * e / d}')

if [ -n "$STATIC" ]; then
    c=$VBEST_C
    echo "== 2b. through Volley in static mode (adaptive = false): Composer ($c connections)"
    start_internet "static$c"
    "$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" --delivery-port "$PORT" \
        --config scripts/relay-static.toml \
        --nameserver "$DNS" --summary-interval 1s >"$TMP/static$c.out" 2>"$TMP/static$c.err" &
    SERVE=$!
    VADDR=$(listen_address "$TMP/static$c.err")
    "$BIN" bench compose --scenario "$SCENARIO" --target "$VADDR" \
        --messages "$MESSAGES" --connections "$c" --sent-out "$TMP/static$c.sent" \
        2>/dev/null | grep '^compose'
    finish_run "static$c"
    kill -TERM "$SERVE"
    wait "$SERVE" || true
    STATIC_RATE=$RATE
    STATIC_RATIO=$(awk -v e="$VOLLEY" -v s="$STATIC_RATE" 'BEGIN {printf "%.0f", 100 * e / s}')
    STATIC_DIRECT=$(awk -v s="$STATIC_RATE" -v d="$BEST" 'BEGIN {printf "%.0f", 100 * s / d}')
fi

echo "== 3. memory: $MEMORY_RECIPIENTS queued recipients over 1,000 domains, sinks paused"
target/$PROFILE/examples/queue_memory "$MEMORY_RECIPIENTS" 1000 2048 | tee "$TMP/memory.out"

echo
echo "== summary (load: $(uptime | sed 's/.*load average/load average/'))"
echo "direct into the sinks (connections:msg/s):$DIRECT_RATES"
echo "best direct:                   $BEST msg/s ($BEST_C connections)"
echo "through Volley, end to end (Composer connections:msg/s):$VOLLEY_RATES"
echo "best through Volley:           $VOLLEY msg/s ($VBEST_C Composer connections) = $RATIO% of the best direct (goal >= 50%)"
echo "  accepted by Volley:          $INGEST msg/s (Composer's clock)"
echo "  Volley:                      $VPEAKS"
if [ -n "$STATIC" ]; then
    echo "static mode (adaptive = false): $STATIC_RATE msg/s = $STATIC_DIRECT% of the best direct; adaptive / static = $STATIC_RATIO%"
fi
grep -m1 -o 'beyond bodies: [0-9]* bytes per queued recipient' "$TMP/memory.out" | sed 's/^/memory /'

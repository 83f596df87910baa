#!/usr/bin/env bash
# Relay benchmark (issue 4), in one go on one machine:
#  1. a Composer sends MESSAGES 2 KB messages over 100 domains straight into
#     the MX sinks of the simulated internet (the direct rate);
#  2. the same load through `volley serve` (fast mode) into the same sinks:
#     the rate at which Volley accepts, and the end-to-end rate (from the
#     first message sent to the last one delivered to a sink);
#  3. memory per queued recipient with the sinks paused (1,000,000
#     recipients over 1,000 domains by default).
# Goals: end-to-end rate >= 50% of the direct rate; <= 256 bytes per queued
# recipient beyond its body bytes.
#
#   scripts/bench-relay.sh                    # MESSAGES=200000 CONNECTIONS=32 SHARDS=2
#   MESSAGES=50000 MEMORY_RECIPIENTS=100000 scripts/bench-relay.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-200000}
CONNECTIONS=${CONNECTIONS:-32}
SHARDS=${SHARDS:-2}
MEMORY_RECIPIENTS=${MEMORY_RECIPIENTS:-1000000}
SCENARIO=scripts/relay-bench.toml

cargo build --release --quiet --bin volley
cargo build --release --quiet -p volley-engine --example queue_memory
BIN=target/release/volley
TMP=$(mktemp -d)
cleanup() {
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

wait_for() { # FILE PATTERN
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2
    cat "$1" >&2
    exit 1
}

now() { date +%s.%N; }

"$BIN" bench internet "$SCENARIO" >"$TMP/internet.out" 2>&1 &
wait_for "$TMP/internet.out" '^mx port'
PORT=$(awk '/^mx port/ {print $3}' "$TMP/internet.out")
DNS=$(awk '/^dns/ {print $2}' "$TMP/internet.out")

echo "== 1. direct: Composer -> sinks ($MESSAGES messages, $CONNECTIONS connections)"
"$BIN" bench compose --scenario "$SCENARIO" --target "127.0.0.2:$PORT" \
    --messages "$MESSAGES" --connections "$CONNECTIONS" 2>&1 | tail -1 | tee "$TMP/direct.out"
DIRECT=$(grep -o '= [0-9.]* msg/s' "$TMP/direct.out" | awk '{print $2}')

echo "== 2. through Volley: Composer -> volley serve ($SHARDS shards, fast) -> sinks"
"$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" --delivery-port "$PORT" \
    --nameserver "$DNS" --summary-interval 100ms >"$TMP/serve.out" 2>"$TMP/serve.err" &
SERVE=$!
wait_for "$TMP/serve.err" 'listening on'
VADDR=$(grep -m1 'listening on' "$TMP/serve.err" | awk '{print $4}')
START=$(now)
"$BIN" bench compose --scenario "$SCENARIO" --target "$VADDR" \
    --messages "$MESSAGES" --connections "$CONNECTIONS" 2>&1 | tail -1 | tee "$TMP/ingest.out"
INGEST=$(grep -o '= [0-9.]* msg/s' "$TMP/ingest.out" | awk '{print $2}')
until tail -n 1 "$TMP/serve.out" | grep -q "delivered $MESSAGES "; do
    if ! kill -0 "$SERVE" 2>/dev/null; then
        echo "volley serve ended early" >&2
        cat "$TMP/serve.err" >&2
        exit 1
    fi
    sleep 0.02
done
END=$(now)
tail -n 1 "$TMP/serve.out"
kill -TERM "$SERVE"
wait "$SERVE" || true
tail -n 1 "$TMP/serve.out"

E2E=$(awk -v n="$MESSAGES" -v a="$START" -v b="$END" 'BEGIN {printf "%.0f", n / (b - a)}')
RATIO=$(awk -v e="$E2E" -v d="$DIRECT" 'BEGIN {printf "%.0f", 100 * e / d}')

echo "== 3. memory: $MEMORY_RECIPIENTS queued recipients over 1,000 domains, sinks paused"
target/release/examples/queue_memory "$MEMORY_RECIPIENTS" 1000 2048 | tee "$TMP/memory.out"

echo
echo "== summary"
echo "direct into the sinks:         $DIRECT msg/s"
echo "accepted by Volley:            $INGEST msg/s"
echo "end to end through Volley:     $E2E msg/s = $RATIO% of direct (goal >= 50%)"
grep -o 'beyond bodies: [0-9]* bytes per queued recipient' "$TMP/memory.out" | sed 's/^/memory /'

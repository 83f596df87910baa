#!/usr/bin/env bash
# The admin server's cost (issue 15), in one go on one machine: the relay
# benchmark's run through `volley serve` (default configuration, fast ack),
# once with nobody asking the admin API and once with /metrics scraped
# every second and the status page's two requests (status, busiest
# queues) every second, alternated ROUNDS times so that drift on a noisy
# machine falls on both. Rates are the sinks' own; `volley bench check`
# proves each message arrived exactly once. Goal: scraped >= 98% of plain.
# Then the size and time of one scrape while the load runs.
#
#   scripts/bench-admin.sh     # MESSAGES=200000 CONNECTIONS=32 ROUNDS=2 SHARDS=2
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-200000}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
SHARDS=${SHARDS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
SCENARIO=scripts/relay-bench.toml
PROFILE=${PROFILE:-release}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo_build --bin volley
BIN=target/$PROFILE/volley
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One run; MODE plain or scraped. Sets RATE; for scraped, SCRAPE (bytes
# and milliseconds of one /metrics scrape in the middle of the load).
run() { # MODE ROUND
    local tag="$1$2"
    start_internet "$tag"
    local admin="127.0.0.1:$(free_port)"
    "$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" --delivery-port "$PORT" \
        --nameserver "$DNS" --admin-listen "$admin" >"$TMP/$tag.out" 2>"$TMP/$tag.err" &
    local serve=$!
    local vaddr
    vaddr=$(listen_address "$TMP/$tag.err")
    local scraper=
    if [ "$1" = scraped ]; then
        (while sleep 1; do
            curl -s -o /dev/null "http://$admin/metrics"
            curl -s -o /dev/null "http://$admin/api/v1/status"
            curl -s -o /dev/null "http://$admin/api/v1/queues?limit=20"
        done) &
        scraper=$!
        (sleep 3; curl -s -o "$TMP/$tag.metrics" -w '%{size_download} %{time_total}\n' \
            "http://$admin/metrics" >"$TMP/$tag.scrape") &
    fi
    "$BIN" bench compose --scenario "$SCENARIO" --target "$vaddr" \
        --messages "$MESSAGES" --connections "$CONNECTIONS" --sent-out "$TMP/$tag.sent" \
        2>/dev/null | grep '^compose'
    finish_run "$tag"
    if [ -n "$scraper" ]; then
        kill "$scraper" 2>/dev/null || true
        wait "$scraper" 2>/dev/null || true
        if [ -s "$TMP/$tag.scrape" ]; then
            SCRAPE=$(awk '{printf "%d bytes in %.1f ms", $1, $2 * 1000}' "$TMP/$tag.scrape")
        fi
    fi
    kill -TERM "$serve"
    wait "$serve" || true
}

echo "== load: $(uptime)"
PLAIN=
SCRAPED=
SCRAPE="not measured"
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: plain"
    run plain "$round"
    PLAIN="$PLAIN $RATE"
    echo "== round $round: /metrics and the status page's requests every second"
    run scraped "$round"
    SCRAPED="$SCRAPED $RATE"
done
echo "== summary (load: $(uptime))"
mean() { tr ' ' '\n' | awk 'NF {s += $1; n++} END {printf "%.0f", s / n}'; }
P=$(echo "$PLAIN" | mean)
S=$(echo "$SCRAPED" | mean)
echo "plain (msg/s per round):$PLAIN; mean $P"
echo "scraped (msg/s per round):$SCRAPED; mean $S"
awk -v s="$S" -v p="$P" 'BEGIN {printf "scraped / plain: %.1f%% (goal >= 98%%)\n", 100 * s / p}'
echo "one /metrics scrape under load: $SCRAPE"

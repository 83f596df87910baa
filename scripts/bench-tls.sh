#!/usr/bin/env bash
# TLS benchmark (issue 13): the relay benchmark's run through `volley serve`
# (fast mode, default adaptive pace) with TLS on both hops, against the same
# run in clear text, alternating ROUNDS times on one machine:
#  - clear: Composer -> Volley -> the 100 sinks of scripts/relay-bench.toml;
#  - tls:   the Composer uses STARTTLS to Volley (checking its certificate
#           against a test CA), and every sink offers STARTTLS, which Volley
#           takes (opportunistic, the default policy).
# Rates are the sinks' own (first send stamp to last acceptance) once they
# hold MESSAGES messages; `volley bench check` proves each arrived exactly
# once. Also: Volley's CPU time per message (user + system, from
# /proc/PID/stat) and its TLS handshakes with the sinks, full and resumed
# (goal: one full handshake per MX host, 100 here; the rest resumed).
# Goal: TLS >= 70% of clear-text throughput.
#
#   scripts/bench-tls.sh      # MESSAGES=50000 CONNECTIONS=32 SHARDS=2 ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-50000}
CONNECTIONS=${CONNECTIONS:-32}
SHARDS=${SHARDS:-2}
ROUNDS=${ROUNDS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
SCENARIO=scripts/relay-bench.toml

PROFILE=${PROFILE:-release} # debug: only to try the script out
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo_build --bin volley
BIN=target/$PROFILE/volley

"$BIN" bench certs "$TMP/certs" >/dev/null
CERTS=$TMP/certs
one_run() { # MODE TAG
    local mode=$1 tag=$2 sink_tls=() serve_tls=() compose_tls=()
    if [ "$mode" = tls ]; then
        sink_tls=(--sink-tls-cert "$CERTS/cert.pem" --sink-tls-key "$CERTS/key.pem")
        serve_tls=(--tls-cert "$CERTS/cert.pem" --tls-key "$CERTS/key.pem")
        compose_tls=(--starttls-ca "$CERTS/ca.pem")
    fi
    echo "== $tag: Composer ($CONNECTIONS connections) -> volley serve ($SHARDS shards) -> 100 sinks, $mode"
    start_internet "$tag" "${sink_tls[@]}"
    "$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" --delivery-port "$PORT" \
        --nameserver "$DNS" --summary-interval 1s "${serve_tls[@]}" \
        >"$TMP/$tag.serve.out" 2>"$TMP/$tag.serve.err" &
    local serve=$!
    local vaddr
    vaddr=$(listen_address "$TMP/$tag.serve.err")
    "$BIN" bench compose --scenario "$SCENARIO" --target "$vaddr" \
        --messages "$MESSAGES" --connections "$CONNECTIONS" --sent-out "$TMP/$tag.sent" \
        "${compose_tls[@]}" 2>/dev/null | grep '^compose'
    finish_run "$tag"
    sleep 1.2 # one more summary line, with the last handshakes
    CPU=$(cpu_seconds "$serve")
    kill -TERM "$serve"
    wait "$serve" || true
    TLSLINE=$(grep -o 'tls out .*' "$TMP/$tag.serve.err" | tail -n 1 || true)
    US=$(awk -v c="$CPU" -v m="$MESSAGES" 'BEGIN {printf "%.0f", c * 1e6 / m}')
    echo "volley: $CPU s CPU = $US us per message${TLSLINE:+ | $TLSLINE}"
}

echo "== load: $(uptime)"
CLEAR_RATES=
TLS_RATES=
CLEAR_CPU=
TLS_CPU=
HANDSHAKES=
for round in $(seq "$ROUNDS"); do
    one_run clear "clear$round"
    CLEAR_RATES="$CLEAR_RATES $RATE"
    CLEAR_CPU="$CLEAR_CPU $US"
    one_run tls "tls$round"
    TLS_RATES="$TLS_RATES $RATE"
    TLS_CPU="$TLS_CPU $US"
    HANDSHAKES="$HANDSHAKES
  round $round: $TLSLINE"
done
best() { tr ' ' '\n' | awk 'NF && $1 > b {b = $1} END {print b}'; }
CLEAR_BEST=$(echo "$CLEAR_RATES" | best)
TLS_BEST=$(echo "$TLS_RATES" | best)
RATIO=$(awk -v t="$TLS_BEST" -v c="$CLEAR_BEST" 'BEGIN {printf "%.0f", 100 * t / c}')

echo
echo "== summary (load: $(uptime | sed 's/.*load average/load average/'))"
echo "clear text (msg/s, each round):$CLEAR_RATES; CPU per message (us):$CLEAR_CPU"
echo "TLS both hops (msg/s, each round):$TLS_RATES; CPU per message (us):$TLS_CPU"
echo "best TLS $TLS_BEST msg/s = $RATIO% of best clear text $CLEAR_BEST msg/s (goal >= 70%)"
echo "Volley's TLS sessions with the 100 MX hosts (full handshakes, resumed):$HANDSHAKES"

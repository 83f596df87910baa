#!/usr/bin/env bash
# DKIM benchmark (issue 14): the relay run through `volley serve` (fast
# mode, the default configuration) unsigned, then with every message signed
# by an Ed25519 key, then by an RSA-2048 key (both made by `volley
# dkim-keygen` for the Composer's domain, bench.test), ROUNDS times, on one
# machine. Rates are the sinks' own; `volley bench check` proves each
# message arrived once and unchanged below the added headers. Also Volley's
# CPU time per message. Goals: Ed25519 >= 90% and RSA-2048 >= 60% of the
# unsigned rate.
#
#   scripts/bench-dkim.sh     # MESSAGES=50000 CONNECTIONS=32 SHARDS=2 ROUNDS=1
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-50000}
CONNECTIONS=${CONNECTIONS:-32}
SHARDS=${SHARDS:-2}
ROUNDS=${ROUNDS:-1}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
SCENARIO=scripts/relay-bench.toml

PROFILE=${PROFILE:-release} # debug: only to try the script out
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo_build --bin volley
BIN=target/$PROFILE/volley

# A configuration file signing with a new key of ALGORITHM ("" for none).
config_for() { # MODE ALGORITHM
    local file=$TMP/$1.toml
    : >"$file"
    if [ -n "$2" ]; then
        "$BIN" dkim-keygen --domain bench.test --selector "$1" --algorithm "$2" \
            --out "$TMP/$1.pem" | sed -n '/^\[\[dkim\]\]/,$p' >"$file"
    fi
    echo "$file"
}

one_run() { # MODE ALGORITHM TAG
    local mode=$1 tag=$3 config
    config=$(config_for "$mode$tag" "$2")
    echo "== $mode$tag: Composer ($CONNECTIONS connections) -> volley serve ($SHARDS shards) -> 100 sinks, signing: ${2:-none}"
    start_internet "$mode$tag"
    "$BIN" serve --config "$config" --listen 127.0.0.1:0 --shards "$SHARDS" \
        --delivery-port "$PORT" --nameserver "$DNS" --summary-interval 1s \
        >"$TMP/$mode$tag.serve.out" 2>"$TMP/$mode$tag.serve.err" &
    local serve=$!
    local vaddr
    vaddr=$(listen_address "$TMP/$mode$tag.serve.err")
    "$BIN" bench compose --scenario "$SCENARIO" --target "$vaddr" \
        --messages "$MESSAGES" --connections "$CONNECTIONS" --sent-out "$TMP/$mode$tag.sent" \
        2>/dev/null | grep '^compose'
    finish_run "$mode$tag"
    local cpu
    cpu=$(cpu_seconds "$serve")
    kill -TERM "$serve"
    wait "$serve" || true
    US=$(awk -v c="$cpu" -v m="$MESSAGES" 'BEGIN {printf "%.0f", c * 1e6 / m}')
    echo "volley: $cpu s CPU = $US us per message"
}

echo "== load: $(uptime)"
SUMMARY=
for round in $(seq "$ROUNDS"); do
    one_run unsigned "" "$round"
    NONE=$RATE NONE_US=$US
    one_run ed25519 ed25519-sha256 "$round"
    ED=$RATE ED_US=$US
    one_run rsa rsa-sha256 "$round"
    RSA=$RATE RSA_US=$US
    SUMMARY="$SUMMARY
round $round: unsigned $NONE msg/s ($NONE_US us CPU/msg); Ed25519 $ED msg/s ($ED_US us) = $(awk -v a="$ED" -v b="$NONE" 'BEGIN {printf "%.0f", 100 * a / b}')%; RSA-2048 $RSA msg/s ($RSA_US us) = $(awk -v a="$RSA" -v b="$NONE" 'BEGIN {printf "%.0f", 100 * a / b}')%"
done
echo
echo "== summary (load: $(uptime | sed 's/.*load average/load average/')); goals: Ed25519 >= 90%, RSA-2048 >= 60% of unsigned$SUMMARY"

#!/usr/bin/env bash
# Slowloris (issue 18): UNTRUSTED connections from untrusted loopback
# addresses (127.0.0.10 and up, 100 each; default 8,500) and TRUSTED ones
# from 127.0.0.1 (default 1,500: below the total limit, since trusted
# clients beyond it are refused 421 like any other, and while they hold
# every place a fresh one is refused too), each dribbling its EHLO one
# octet every 3 s for DURATION seconds (default 40), against
# `volley serve` (release build, 2 shards) with its
# default limits: 2,000 trusted sessions in all, a quarter of that on top
# for untrusted ones (greeted 554 and held until they quit), 500 per
# untrusted address. Only the command timeout is shortened (10 s instead
# of 300 s) so that it shows within the run. A fresh session from
# 127.0.0.2 is timed every 100 ms throughout; the goal is under 1 s.
#
#   scripts/bench-slowloris.sh      # UNTRUSTED=8500 TRUSTED=1500 DURATION=40
set -euo pipefail
cd "$(dirname "$0")/.."

UNTRUSTED=${UNTRUSTED:-8500}
TRUSTED=${TRUSTED:-1500}
DURATION=${DURATION:-40}
cargo build --release --quiet --bin volley
BIN=target/release/volley
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

need=$((UNTRUSTED + TRUSTED + 200))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    echo "the open-file hard limit ($hard) is below $need: raise it (limits.conf, LimitNOFILE=)" >&2
    exit 1
fi
ulimit -n "$hard"

cat >"$TMP/volley.toml" <<CONF
[ingest]
trusted_networks = ["127.0.0.1/32", "127.0.0.2/32"]
command_timeout = "10s"
CONF
"$BIN" serve --config "$TMP/volley.toml" --listen 127.0.0.1:0 --shards 2 \
    --nameserver 127.0.0.1:9 >"$TMP/serve.out" 2>"$TMP/serve.err" &
ADDR=$(listen_address "$TMP/serve.err")
echo "== slowloris: $UNTRUSTED untrusted + $TRUSTED trusted connections to volley serve at $ADDR (load: $(cut -d' ' -f1-3 /proc/loadavg))"
timeout $((DURATION + 120)) python3 scripts/slowloris.py "$ADDR" "$UNTRUSTED" "$TRUSTED" 3 "$DURATION"

#!/usr/bin/env bash
# The README's screenshot of the status page: the simulated internet of
# the relay benchmark, `volley serve` in its default configuration with
# the admin server on a free port, a Composer sending, and after 40 s of
# it (40 of the server's one-second rate samples) headless Chromium
# loading the page.
#
#   scripts/status-page-screenshot.sh [OUT.png]   # default docs/status-page.png
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/status-page.png}
MESSAGES=${MESSAGES:-2000000}
SCENARIO=scripts/relay-bench.toml
PROFILE=${PROFILE:-release}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo_build --bin volley
BIN=target/$PROFILE/volley
command -v chromium >/dev/null || { echo "chromium is not installed" >&2; exit 1; }

start_internet shot
ADMIN=127.0.0.1:$((20000 + RANDOM % 20000))
"$BIN" serve --listen 127.0.0.1:0 --shards 2 --delivery-port "$PORT" --nameserver "$DNS" \
    --admin-listen "$ADMIN" >"$TMP/serve.out" 2>"$TMP/serve.err" &
VADDR=$(listen_address "$TMP/serve.err")
"$BIN" bench compose --scenario "$SCENARIO" --target "$VADDR" --messages "$MESSAGES" \
    --connections 8 >/dev/null 2>&1 &
sleep 40
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --window-size=1280,860 --virtual-time-budget=3000 --screenshot="$OUT" "http://$ADMIN/" 2>/dev/null
echo "wrote $OUT"

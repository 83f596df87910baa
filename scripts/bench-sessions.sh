#!/usr/bin/env bash
# Many concurrent Composer sessions from one host: SESSIONS sessions from
# 127.0.0.1 are opened and held (greeted, past EHLO) against `volley serve`
# (release build, 2 shards), then one fresh smtplib session is timed from
# connect to its greeting and to the 250 after its message; the goal is
# under 1 s. Finally every held session must still answer NOOP.
#
# Trusted clients are not held to `max_connections_per_ip`; the total
# `max_connections` (2,000 by default) still holds, so the config below
# raises it. Volley raises its own open-file limit to the hard limit at
# start; this script raises the shell's for the Python client.
#
#   scripts/bench-sessions.sh        # SESSIONS=10000
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-10000}
cargo build --release --quiet --bin volley
BIN=target/release/volley
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((SESSIONS + 100)) ]; then
    echo "the open-file hard limit ($hard) is below $((SESSIONS + 100)): raise it (limits.conf, LimitNOFILE=)" >&2
    exit 1
fi
ulimit -n "$hard"

cat >"$TMP/volley.toml" <<CONF
[ingest]
max_connections = $((SESSIONS + 100))
CONF
# The fresh message's domain has no DNS answer: it stays queued, which
# does not matter here; only ingest is measured.
"$BIN" serve --config "$TMP/volley.toml" --listen 127.0.0.1:0 --shards 2 \
    --nameserver 127.0.0.1:9 >"$TMP/serve.out" 2>"$TMP/serve.err" &
ADDR=$(listen_address "$TMP/serve.err")
echo "== $SESSIONS sessions from 127.0.0.1 to volley serve at $ADDR (load: $(cut -d' ' -f1-3 /proc/loadavg))"
timeout 300 python3 scripts/hold-sessions.py "$ADDR" "$SESSIONS"
grep -m1 'open files' "$TMP/serve.err" || true

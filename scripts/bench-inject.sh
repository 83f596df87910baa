#!/usr/bin/env bash
# Templated mailings (issue 17), in one go on one machine:
#  1. memory: RECIPIENTS recipients of one 2 KB template with three short
#     variables each, posted to `POST /api/inject/v1` in requests of 1,000
#     while the MX host never greets (everything stays queued): resident
#     set growth per queued recipient, template and all. Goal <= 128 bytes.
#  2. the same mailing as whole 2 KB messages over SMTP (the queue_memory
#     example), for comparison.
#  3. throughput: RATE_RECIPIENTS recipients to sinks that take everything,
#     through the API (rendered at send time) and pre-rendered by the
#     Composer over SMTP, side by side. Goal: the API >= 90% of SMTP.
#
#   scripts/bench-inject.sh     # RECIPIENTS=1000000 RATE_RECIPIENTS=100000
set -euo pipefail
cd "$(dirname "$0")/.."

RECIPIENTS=${RECIPIENTS:-1000000}
RATE_RECIPIENTS=${RATE_RECIPIENTS:-100000}
PROFILE=${PROFILE:-release}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo_build -p volley-engine --example inject_bench --example queue_memory
ulimit -n 20000 2>/dev/null || true

echo "== 1 and 3: through the API"
target/$PROFILE/examples/inject_bench "$RECIPIENTS" "$RATE_RECIPIENTS" | tee "$TMP/inject.out"
echo "== 2: the same mailing as whole messages over SMTP"
target/$PROFILE/examples/queue_memory "$RECIPIENTS" 50 2048 | tee "$TMP/smtp.out"

echo
echo "== summary (load: $(uptime | sed 's/.*load average/load average/'))"
grep '^memory' "$TMP/inject.out"
grep -o 'RSS [0-9]* MiB (before [0-9]* MiB' "$TMP/smtp.out" | head -1 |
    awk -v n="$RECIPIENTS" '{print "same mailing over SMTP: " int(($2 - $5) * 1048576 / n) " bytes per queued recipient in all (RSS " $2 " MiB)"}'
grep '^throughput' "$TMP/inject.out"

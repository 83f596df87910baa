# What the benchmark scripts share; sourced, not run.
#
# TMP: a scratch directory, removed on exit together with every background
# job the script started.
TMP=$(mktemp -d)
cleanup() {
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# Waits up to 10 s for PATTERN to appear in FILE; otherwise prints FILE and
# exits.
wait_for() { # FILE PATTERN
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2
    cat "$1" >&2
    exit 1
}

# The first ingest address a `volley serve` log names ("listening on ADDR").
listen_address() { # LOG
    wait_for "$1" 'listening on'
    grep -m1 -o 'listening on [^ ]*' "$1" | awk '{print $3}'
}

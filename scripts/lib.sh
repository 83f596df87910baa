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

# cargo build in PROFILE (release unless the script's caller set debug,
# which is only for trying a script out), quietly.
cargo_build() { # CARGO-ARGS...
    if [ "${PROFILE:-release}" = release ]; then
        cargo build --release --quiet "$@"
    else
        cargo build --quiet "$@"
    fi
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { # PID
    awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"
}

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

# The runs of the relay benchmarks use BIN (the volley binary), SCENARIO,
# MESSAGES and RUN_TIMEOUT (seconds), which the script sets.
#
# A fresh simulated internet for run TAG that exits once its sinks hold
# MESSAGES messages (ARGS go to `volley bench internet`); sets INTERNET
# (pid), PORT, DNS.
start_internet() { # TAG [ARGS...]
    local tag=$1
    shift
    "$BIN" bench internet "$SCENARIO" --until-delivered "$MESSAGES" \
        --received-out "$TMP/$tag.received" --routes-out "$TMP/$tag.routes" "$@" \
        >"$TMP/$tag.internet" 2>"$TMP/$tag.internet.err" &
    INTERNET=$!
    wait_for "$TMP/$tag.internet" '^mx port'
    PORT=$(awk '/^mx port/ {print $3}' "$TMP/$tag.internet")
    DNS=$(awk '/^dns/ {print $2}' "$TMP/$tag.internet")
}

# Waits for the internet of run TAG to count MESSAGES, prints the sinks'
# line, checks exactly-once delivery, and sets RATE (msg/s, sinks' clock).
finish_run() { # TAG
    local waited=0
    while kill -0 "$INTERNET" 2>/dev/null; do
        if ((waited >= RUN_TIMEOUT * 50)); then
            echo "the sinks did not get $MESSAGES messages within ${RUN_TIMEOUT}s" >&2
            tail -c 300 "$TMP/$1.internet.err" >&2
            exit 1
        fi
        sleep 0.02
        waited=$((waited + 1))
    done
    wait "$INTERNET"
    grep '^sinks:' "$TMP/$1.internet"
    RATE=$(grep -o '= [0-9.]* msg/s' "$TMP/$1.internet" | awk '{print $2}')
    "$BIN" bench check "$SCENARIO" "$TMP/$1.sent" "$TMP/$1.received"
}

#!/usr/bin/env bash
# What one malloc_trim costs on this machine at several heap sizes (see
# scripts/trim-cost.c): the figure behind `volley serve`'s trim policy.
#
#   scripts/trim-cost.sh [BLOCKS-PER-THREAD...]   # default: 10000 100000 1000000
set -euo pipefail
cd "$(dirname "$0")"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
cc -O2 -pthread trim-cost.c -o "$bin"
[ $# -gt 0 ] || set -- 10000 100000 1000000
for n in "$@"; do
    "$bin" "$n"
done

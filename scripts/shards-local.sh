#!/usr/bin/env bash
# Run a plan as M shards on this machine, one coordinator per shard (each with its own
# out dir), then verify that the shards together hold every batch exactly once.
# This is the shape of a multi-machine run, with xargs standing in for the scheduler.
#
#   scripts/shards-local.sh M OUT_ROOT [coordinator run flags...]
#   scripts/shards-local.sh 4 out --url 'http://127.0.0.1:8080/api/tickers/?start={start}&limit={limit}' --range 0..10000 --workers 1
#
# Shard K writes OUT_ROOT/shard-K. COORDINATOR names the binary (default: coordinator on
# PATH, else target/release/coordinator). Exit status: that of `coordinator verify`, or
# the first failing shard's.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 M OUT_ROOT [coordinator run flags...]" >&2
    exit 2
fi
shards=$1
root=$2
shift 2
case $shards in
    '' | *[!0-9]* | 0) echo "error: M must be a whole number of at least 1, not '$shards'" >&2; exit 2 ;;
esac

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${COORDINATOR:-}" ]; then
    if command -v coordinator >/dev/null 2>&1; then
        COORDINATOR=coordinator
    else
        COORDINATOR=$here/target/release/coordinator
    fi
fi
export COORDINATOR

mkdir -p -- "$root"
# One line per shard index; xargs runs them M at a time and fails if any fails.
status=0
seq 0 $((shards - 1)) | xargs -P "$shards" -I{} \
    "$COORDINATOR" "$@" --shard "{}/$shards" --out "$root/shard-{}" --quiet || status=$?

dirs=()
for ((k = 0; k < shards; k++)); do
    dirs+=("$root/shard-$k")
done
"$COORDINATOR" verify "${dirs[@]}" || exit $?
exit "$status"

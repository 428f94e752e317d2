#!/usr/bin/env bash
# Run M shards over ssh with GNU parallel: each host in HOSTS runs shard K of M into its
# own out dir on a shared filesystem (or collect them afterwards), then verify here.
#
#   HOSTS=node1,node2,node3,node4 OUT_ROOT=/shared/out \
#   scripts/parallel-ssh.sh 'http://api.example/tickers/?start={start}&limit={limit}' 0..1000000
#
# Needs GNU parallel here, and `coordinator` (and perl, which GNU parallel runs there) on
# the PATH of a non-interactive ssh session on every host. The ssh command is GNU
# parallel's: `ssh`, or $PARALLEL_SSH (e.g. PARALLEL_SSH='ssh -F my_config').
# COORDINATOR names the binary for the final verify here (default: coordinator).
# Exit status: verify's when the shards are incomplete (1), else parallel's (the number
# of shards that failed on every try, 0 when none).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: HOSTS=h1,h2,... OUT_ROOT=DIR $0 URL_TEMPLATE START..END [coordinator flags...]" >&2
    exit 2
fi
url=$1
range=$2
shift 2
: "${HOSTS:?set HOSTS to a comma-separated list of ssh logins}"
: "${OUT_ROOT:?set OUT_ROOT to a directory every host can write}"
IFS=, read -r -a hosts <<<"$HOSTS"
shards=${#hosts[@]}
# The hosts see the same path: make it absolute, as a remote shell starts in $HOME.
case $OUT_ROOT in
    /*) ;;
    *) OUT_ROOT=$PWD/$OUT_ROOT ;;
esac
mkdir -p -- "$OUT_ROOT" # for the job log, written here

# parallel joins its command words with spaces into one shell command run on the host,
# so every value is quoted for that shell here; {} is the shard index.
q() { printf '%q' "$1"; }
extra=""
for arg in "$@"; do
    extra+=" $(q "$arg")"
done
out="$(q "$OUT_ROOT")/shard-{}"

# One job per shard; parallel hands each to a free host (--sshlogin, one job per host),
# retries a failed job on another host, and keeps a log to resume the whole sweep.
# --resume on the coordinator side makes a retried shard continue rather than restart.
status=0
seq 0 $((shards - 1)) | parallel --jobs 1 --sshlogin "$HOSTS" --retries 3 \
    --joblog "$OUT_ROOT/parallel.log" --halt never \
    "coordinator --url $(q "$url") --range $(q "$range") --shard {}/$shards --out $out --quiet$extra" \
    "\$(test -f $out/run.json && echo --resume)" || status=$?

dirs=()
for ((k = 0; k < shards; k++)); do
    dirs+=("$OUT_ROOT/shard-$k")
done
"${COORDINATOR:-coordinator}" verify "${dirs[@]}" --print-command || exit $?
exit "$status"

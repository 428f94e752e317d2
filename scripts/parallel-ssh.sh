#!/usr/bin/env bash
# Run M shards over ssh with GNU parallel: each host in HOSTS runs shard K of M into its
# own out dir on a shared filesystem (or collect them afterwards), then verify here.
#
#   HOSTS=node1,node2,node3,node4 OUT_ROOT=/shared/out \
#   scripts/parallel-ssh.sh 'http://api.example/tickers/?start={start}&limit={limit}' 0..1000000
#
# Needs GNU parallel here, and `coordinator` on PATH on every host.
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

# One job per shard; parallel hands each to a free host (--sshlogin, one job per host),
# retries a failed job on another host, and keeps a log to resume the whole sweep.
# --resume on the coordinator side makes a retried shard continue rather than restart.
seq 0 $((shards - 1)) | parallel --jobs 1 --sshlogin "$HOSTS" --retries 3 \
    --joblog "$OUT_ROOT/parallel.log" --halt never \
    coordinator --url "$(printf %q "$url")" --range "$range" --shard '{}'/"$shards" \
    --out "$OUT_ROOT/shard-{}" --quiet "$@" \
    '$(test -f' "$OUT_ROOT/shard-{}/run.json" '&& echo --resume)'

dirs=()
for ((k = 0; k < shards; k++)); do
    dirs+=("$OUT_ROOT/shard-$k")
done
coordinator verify "${dirs[@]}" --print-command

#!/usr/bin/env bash
# A Slurm job array: one array task per shard; Slurm's SLURM_ARRAY_TASK_ID/COUNT/MIN
# tell each task its shard (`--shard auto`). Submit with:
#
#   SCRAPE_URL='http://api.example/tickers/?start={start}&limit={limit}' SCRAPE_RANGE=0..1000000 \
#   OUT_ROOT=/shared/out sbatch --array=0-15 scripts/slurm-array.sh
#
# then, once all tasks are done:  coordinator verify /shared/out/shard-*
#
#SBATCH --job-name=scrape
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=scrape-%A_%a.log
set -euo pipefail

: "${SCRAPE_URL:?set SCRAPE_URL to the URL template}"
: "${SCRAPE_RANGE:?set SCRAPE_RANGE to START..END}"
: "${OUT_ROOT:?set OUT_ROOT to a directory all nodes can write}"
: "${SLURM_ARRAY_TASK_ID:?run this as a Slurm array task (sbatch --array=...)}"
COORDINATOR=${COORDINATOR:-coordinator}
shard=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
out="$OUT_ROOT/shard-$shard"

# --resume makes a requeued task continue where it stopped instead of starting over.
resume=()
if [ -f "$out/run.json" ]; then
    resume=(--resume)
fi
exec "$COORDINATOR" --url "$SCRAPE_URL" --range "$SCRAPE_RANGE" --batch "${SCRAPE_BATCH:-10}" \
    --workers "${SLURM_CPUS_PER_TASK:-1}" --shard auto --out "$out" --quiet "${resume[@]}" "$@"

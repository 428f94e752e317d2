#!/usr/bin/env bash
# The benchmark suite. Installs what it needs (nginx and wrk from Debian, oha from
# crates.io, aiohttp from PyPI), starts targets on loopback, runs this tool and its
# peers on the same workloads in the same run, and writes BENCHMARKS.md.
#
#   scripts/bench.sh            # full suite (about 10 minutes)
#   BENCH_SECONDS=5 scripts/bench.sh   # shorter load runs
#
# All traffic goes to 127.0.0.1; every run is bounded in time or count. The machine
# is shared and noisy: compare ratios within one run, not absolute numbers across runs.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
secs=${BENCH_SECONDS:-10}
reps=${BENCH_REPS:-3}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk
fi
need oha || cargo install oha --locked
python3 -c 'import aiohttp' 2>/dev/null || pip install -q aiohttp
cargo build --release -q -p coordinator
bin=$repo/target/release/coordinator

# On tmpfs: file creation on the disk here varies wildly from minute to minute, which
# would drown the differences between the tools.
work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" || true
results=$work/results.jsonl
: >"$results"
note() { printf '%s\n' "$*" >&2; }

# Records one measured run: name, group, the rusage JSON, and the tool's own numbers.
record() { # group name rusage_json extra_json
    python3 - "$1" "$2" "$3" "$4" >>"$results" <<'PY'
import json, sys
group, name, usage, extra = sys.argv[1:5]
row = {"group": group, "name": name, **json.loads(usage), **json.loads(extra)}
print(json.dumps(row))
PY
}
measure() { # stdout_file cmd... -> rusage JSON on stdout
    local out=$1
    shift
    python3 "$repo/scripts/bench/rusage.py" --sample-rss --stdout "$out" -- "$@"
}
start_server() { # url_file cmd... -> sets $server_url
    local file=$1
    shift
    "$@" >"$file" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do
        [ -s "$file" ] && break
        sleep 0.05
    done
    server_url=$(head -n1 "$file")
}

# ---- targets ----------------------------------------------------------------------
mkdir -p "$work/www" "$work/nginx"
start_server "$work/tickers.url" "$bin" serve --addr 127.0.0.1:0
tickers=$server_url
curl -s "$tickers/api/tickers/?start=0&limit=8" >"$work/www/tickers.json"
nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 65536; }
http {
    access_log off;
    keepalive_requests 1000000000;
    server {
        listen 127.0.0.1:$nginx_port;
        location / { root $work/www; }
    }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
static=http://127.0.0.1:$nginx_port/tickers.json
for _ in $(seq 100); do curl -sf -o /dev/null "$static" && break; sleep 0.05; done
body_bytes=$(stat -c %s "$work/www/tickers.json")
note "nginx on $static ($body_bytes bytes); tickers API on $tickers"

# ---- load mode: CPU per request against nginx ----------------------------------------
wrk_requests() { python3 -c 'import re,sys; print(re.search(r"(\d+) requests in", open(sys.argv[1]).read()).group(1))' "$1"; }
oha_requests() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(d["statusCodeDistribution"].values()))' "$1"; }
ours_requests() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["responses"])' "$1"; }

load_round() { # group: keepalive or close
    local group=$1 o=$work/out
    local wrk_extra=() oha_extra=() ours_extra=()
    if [ "$group" = close ]; then
        wrk_extra=(-H "Connection: close")
        oha_extra=(--disable-keepalive)
        ours_extra=(--no-keepalive)
    fi
    for rep in $(seq "$reps"); do
        u=$(measure "$o" wrk -t2 -c50 -d"${secs}s" "${wrk_extra[@]}" "$static")
        record "$group" wrk "$u" "{\"requests\": $(wrk_requests "$o"), \"rep\": $rep}"
        u=$(measure "$o" oha --no-tui --output-format json -z "${secs}s" -c 50 "${oha_extra[@]}" "$static")
        record "$group" oha "$u" "{\"requests\": $(oha_requests "$o"), \"rep\": $rep}"
        u=$(measure "$o" "$bin" load -w 2 -c 50 -z "${secs}s" --json --quiet "${ours_extra[@]}" "$static")
        record "$group" coordinator "$u" "{\"requests\": $(ours_requests "$o"), \"rep\": $rep}"
    done
}
note "load mode, keep-alive"
load_round keepalive
note "load mode, a new connection per request"
load_round close

# The --rate path against the saturating path, each tool against itself.
ours_rps=$(python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
r = [x["requests"] / x["wall_s"] for x in rows if x["group"] == "keepalive" and x["name"] == "coordinator"]
print(int(statistics.median(r) * 0.8))
PY
)
note "load mode, --rate $ours_rps/s"
for rep in $(seq "$reps"); do
    u=$(measure "$work/out" "$bin" load -w 2 -c 50 -z "${secs}s" --rate "$ours_rps" --json --quiet "$static")
    record rate coordinator "$u" "{\"requests\": $(ours_requests "$work/out"), \"rep\": $rep, \"rate\": $ours_rps}"
    u=$(measure "$work/out" oha --no-tui --output-format json -z "${secs}s" -c 50 -q "$ours_rps" "$static")
    record rate oha "$u" "{\"requests\": $(oha_requests "$work/out"), \"rep\": $rep, \"rate\": $ours_rps}"
done

# Over HTTP/2 (h2c) against the built-in server: nginx here speaks HTTP/2 only over
# TLS, and wrk not at all. One stream per connection, 50 connections, like the above.
note "load mode over HTTP/2"
for rep in $(seq "$reps"); do
    u=$(measure "$work/out" oha --no-tui --output-format json --http2 -z "${secs}s" -c 50 "$tickers/api/tickers/?start=0&limit=8")
    record h2load oha "$u" "{\"requests\": $(oha_requests "$work/out"), \"rep\": $rep}"
    u=$(measure "$work/out" "$bin" load --http2 -w 2 -c 50 -z "${secs}s" --json --quiet "$tickers/api/tickers/?start=0&limit=8")
    record h2load coordinator "$u" "{\"requests\": $(ours_requests "$work/out"), \"rep\": $rep}"
done

note "scaling: 1 and 2 workers"
for w in 1 2; do
    u=$(measure "$work/out" "$bin" load -w "$w" -c 50 -z "${secs}s" --json --quiet "$static")
    record scaling "coordinator -w $w" "$u" "{\"requests\": $(ours_requests "$work/out")}"
done

# ---- scrape mode: 10,000 pages of the tickers API to files ------------------------
pages=10000
range=0..$((pages * 10))
template="$tickers/api/tickers/?start={start}&limit={limit}"
python3 - "$tickers" "$pages" "$work/curl.cfg" <<'PY'
import sys
base, pages, cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(cfg, "w") as f:
    for i in range(pages):
        s = i * 10
        f.write(f'url = "{base}/api/tickers/?start={s}&limit=10"\noutput = "batch{s}-{s + 10}.json"\n')
PY
for rep in $(seq "$reps"); do
    note "scrape mode, rep $rep"
    rm -rf "$work/s"; mkdir -p "$work/s"
    u=$(measure "$work/out" "$bin" --workers 2 --url "$template" --range "$range" --batch 10 --out "$work/s/ours" --json --quiet)
    record scrape coordinator "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out"), \"rep\": $rep}"
    rm -rf "$work/s/ours"
    u=$(measure "$work/out" "$bin" --workers 2 --http2 --url "$template" --range "$range" --batch 10 --out "$work/s/ours" --json --quiet)
    record scrape "coordinator --http2" "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out"), \"rep\": $rep}"
    u=$(measure "$work/out" python3 "$repo/scripts/bench/peer_asyncio.py" --url-template "$template" --range "$range" --batch 10 --concurrency 256 --out "$work/s/py")
    record scrape "python asyncio+aiohttp" "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out"), \"rep\": $rep}"
    mkdir -p "$work/s/curl"
    u=$(cd "$work/s/curl" && measure "$work/out" curl -s --parallel --parallel-max 256 -K "$work/curl.cfg")
    record scrape "curl --parallel" "$u" "{\"pages\": $(find "$work/s/curl" -name 'batch*' | wc -l), \"rep\": $rep}"
done

# ---- scaling with workers against a server that is not the bottleneck ---------------
# Each page is answered after 20 ms, so the server mostly waits: with 100 requests in
# flight per worker, throughput should grow with the workers until CPU runs out.
start_server "$work/d20.url" "$bin" serve --addr 127.0.0.1:0 --delay 20..20
d20="$server_url/api/tickers/?start={start}&limit={limit}"
for w in 1 2; do
    note "scrape scaling: $w worker(s), 20 ms per page"
    rm -rf "$work/scale"
    u=$(measure "$work/out" "$bin" --workers "$w" --concurrency 100 --url "$d20" --range 0..400000 --batch 10 --out "$work/scale" --json --quiet)
    record scrape_scaling "$w" "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out")}"
done

# ---- --rate in scrape mode: 200 requests/s for 10 s over 2 workers -------------------
note "scrape mode --rate 200 for 10 s"
rm -rf "$work/rate"
u=$(measure "$work/out" "$bin" --workers 2 --url "$template" --range 0..1000000 --batch 10 --rate 200 --deadline 10s --grace 0.5s --out "$work/rate" --quiet || true)
windows=$(python3 - "$work/rate/manifest.jsonl" <<'PY'
import collections, json, sys
at = [json.loads(l)["at_ms"] for l in open(sys.argv[1])]
t0 = min(at)
per = collections.Counter((a - t0) // 1000 for a in at)
full = [per[s] for s in range(0, 10)]
print(json.dumps({"requests": len(at), "max_window": max(full), "min_window": min(full)}))
PY
)
record scrape_rate coordinator "$u" "$windows"

# ---- the seed's experiment: 10,000 requests in flight, each answered after 2-4 s ----
start_server "$work/slow.url" "$bin" serve --addr 127.0.0.1:0 --delay 2000..4000
slow=$server_url
note "10,000 in flight on $slow"
for rep in $(seq "$reps"); do
    rm -rf "$work/seed"
    u=$(measure "$work/out" "$bin" --workers 2 --concurrency 5000 --url "$slow/api/tickers/?start={start}&limit={limit}" --range 0..100000 --batch 10 --out "$work/seed" --timeout 60s --json --quiet)
    record inflight10k coordinator "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out"), \"rep\": $rep}"
    rm -rf "$work/seed"
    u=$(measure "$work/out" "$bin" --workers 2 --concurrency 5000 --http2 --http2-streams 1000 --url "$slow/api/tickers/?start={start}&limit={limit}" --range 0..100000 --batch 10 --out "$work/seed" --timeout 60s --json --quiet)
    record inflight10k "coordinator --http2" "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out"), \"rep\": $rep}"
    u=$(measure "$work/out" python3 "$repo/scripts/bench/inflight.py" --url "$slow/api/tickers/?start={start}&limit=10" --count 10000)
    record inflight10k "python asyncio+aiohttp" "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/out"), \"rep\": $rep}"
done

# 100,000 in flight. One source address reaches one server port through ~28K ephemeral
# ports, and one process may hold at most `ulimit -Hn` descriptors (the coordinator raises
# its soft limit to that; raising the hard limit needs privileges): so the requests are
# spread over eight servers on eight ports, and over eight worker processes.
nofile=$(ulimit -Hn)
servers=8
per_worker=$((100000 / servers))
note "100,000 in flight over $servers servers and $servers workers (open files: $nofile per process)"
: >"$work/bases"
for k in $(seq "$servers"); do
    start_server "$work/slow$k.url" "$bin" serve --addr 127.0.0.1:0 --delay 2000..4000
    echo "$server_url" >>"$work/bases"
done
python3 - "$work/bases" "$work/urls100k" <<'PY'
import sys
bases = open(sys.argv[1]).read().split()
with open(sys.argv[2], "w") as f:
    for i in range(100_000):
        f.write(f"{bases[i % len(bases)]}/api/tickers/?start={i * 10}&limit=10\n")
PY
rm -rf "$work/seed"
u=$(measure "$work/out" "$bin" --workers "$servers" --concurrency "$per_worker" --urls "$work/urls100k" --out "$work/seed" --timeout 60s --json --quiet || true)
record inflight100k coordinator "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("ok", 0))' "$work/out" 2>/dev/null || echo 0), \"nofile\": $nofile, \"processes\": $servers}"

# The same 100,000 over HTTP/2: ten thousand streams to a connection, so two workers
# hold ten sockets to one server between them, far under the open-file limit (and the
# server's answers to a connection leave several to a write).
note "100,000 in flight over HTTP/2 on $slow"
for rep in $(seq "$reps"); do
    rm -rf "$work/seed"
    u=$(measure "$work/out" "$bin" --workers 2 --concurrency 50000 --http2 --http2-streams 10000 --url "$slow/api/tickers/?start={start}&limit={limit}" --range 0..1000000 --batch 10 --out "$work/seed" --timeout 60s --json --quiet || true)
    record inflight100k "coordinator --http2" "$u" "{\"pages\": $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("ok", 0))' "$work/out" 2>/dev/null || echo 0), \"nofile\": $nofile, \"processes\": 1, \"workers\": 2, \"rep\": $rep}"
done

# ---- micro-benchmarks --------------------------------------------------------------
note "criterion micro-benchmarks"
cargo bench -q -p shared --bench ipc -- --warm-up-time 1 --measurement-time 3 2>/dev/null |
    grep -E '^[a-z].*time:|^ +time:|^[a-z]' >"$work/criterion.txt" || true

python3 "$repo/scripts/bench/report.py" "$results" "$work/criterion.txt" \
    --seconds "$secs" --reps "$reps" --body-bytes "$body_bytes" --static-url "$static" >"$repo/BENCHMARKS.md"
note "wrote BENCHMARKS.md"

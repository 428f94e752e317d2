#!/usr/bin/env bash
# The benchmark suite. Installs what it needs (nginx and wrk from Debian, oha from
# crates.io, aiohttp from PyPI), starts targets on loopback, runs this tool and its
# peers on the same workloads in the same run, and writes BENCHMARKS.md.
#
#   scripts/bench.sh                   # full suite (about 30 minutes)
#   BENCH_SECONDS=5 scripts/bench.sh   # shorter load runs
#   BENCH_ONLY=scrape_rate BENCH_BIN=target/debug/coordinator BENCH_REPS=1 scripts/bench.sh
#                                      # a smoke run of one group, into target/bench-partial.md
#
# BENCH_ONLY takes a comma-separated list of groups: load (against nginx and over
# HTTP/2; needs nginx, wrk and oha), scrape, tls (scrape and load over HTTPS against
# nginx with a private CA made here; needs nginx, wrk, oha, openssl and aiohttp),
# scrape_scaling, scrape_rate, adaptive (adaptive throttling against a server that
# allows 200 requests a second), inflight10k, inflight100k, criterion. Only what the
# chosen groups need is installed. BENCH_BIN runs that binary instead of building the
# release one; BENCH_OUT names the report (default BENCHMARKS.md, or
# target/bench-partial.md with BENCH_ONLY).
#
# Every measured command is checked, not believed: rusage.py exits with the command's
# exit code and records it, and scripts/bench/validate.py checks the output on its own
# (page files counted and compared byte for byte, by sha256, with the pages the server
# serves, fetched separately; load runs against nginx compared with nginx's own request
# count). A run that exited non-zero or whose output is wrong is recorded as failed;
# report.py lists it as failed and never takes it into a figure.
#
# All traffic goes to 127.0.0.1; every run is bounded in time or count. The machine
# is shared and noisy: compare ratios within one run, not absolute numbers across runs.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
secs=${BENCH_SECONDS:-10}
reps=${BENCH_REPS:-3}
only=${BENCH_ONLY:-}
groups="load scrape tls scrape_scaling scrape_rate adaptive inflight10k inflight100k criterion"
for g in ${only//,/ }; do
    case " $groups " in
    *" $g "*) ;;
    *)
        echo "bench.sh: BENCH_ONLY: unknown group $g (groups: $groups)" >&2
        exit 2
        ;;
    esac
done
selected() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
if [ -n "$only" ]; then
    report=${BENCH_OUT:-$repo/target/bench-partial.md}
else
    report=${BENCH_OUT:-$repo/BENCHMARKS.md}
fi

need() { command -v "$1" >/dev/null 2>&1; }
if selected load || selected tls; then
    if ! need nginx || ! need wrk || ! need openssl; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk openssl
    fi
    need oha || cargo install oha --locked
fi
if selected scrape || selected tls || selected inflight10k; then
    python3 -c 'import aiohttp' 2>/dev/null || pip install -q aiohttp
fi
if [ -n "${BENCH_BIN:-}" ]; then
    bin=$(realpath -- "$BENCH_BIN")
else
    cargo build --release -q -p coordinator
    bin=$repo/target/release/coordinator
fi
validate=$repo/scripts/bench/validate.py

# On tmpfs: file creation on the disk here varies wildly from minute to minute, which
# would drown the differences between the tools.
work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
# nginx's worker runs as nobody: it must be able to read what it serves (mktemp made
# the directory private, and nginx answered 403 to every request until this).
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
    done
    wait
    rm -rf -- "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
results=$work/results.jsonl
: >"$results"
note() { printf '%s\n' "$*" >&2; }

# Records one measured run: group, name, then JSON objects merged left to right (the
# rusage JSON with the exit code, the check, the run's own fields). The row is valid
# only when every check in it says so; what failed goes to "why".
record() { # group name json...
    python3 - "$@" >>"$results" <<'PY'
import json, sys
group, name, *parts = sys.argv[1:]
row, why, valid = {"group": group, "name": name}, [], True
for text in parts:
    try:
        part = json.loads(text) if text.strip() else {}
    except ValueError:
        part = {"valid": False, "why": f"unreadable check output: {text[:200]!r}"}
    if "valid" in part:
        valid = valid and part["valid"] is True
        if part.get("why"):
            why.append(part["why"])
    row.update({k: v for k, v in part.items() if k not in ("valid", "why")})
row["valid"], row["why"] = valid, "; ".join(why) or None
print(json.dumps(row))
PY
}
# Runs one command under rusage.py; sets $usage (its JSON, with "exit_code") and
# $status. A command that failed is recorded as failed, not skipped or averaged in.
measure() { # stdout_file cmd...
    local out=$1
    shift
    usage=$(python3 "$repo/scripts/bench/rusage.py" --sample-rss --stdout "$out" -- "$@") && status=0 || status=$?
    if [ -z "$usage" ]; then
        usage="{\"exit_code\": $status}"
    fi
    if [ "$status" != 0 ]; then
        note "  exit $status: $*"
    fi
}
# Runs validate.py; sets $check (its JSON). Its verdict is in the JSON ("valid").
check_with() { # validate.py args...
    if ! check=$(python3 "$validate" "$@"); then
        note "  check failed: ${check:-validate.py gave no verdict}"
    fi
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
    if [ -z "$server_url" ]; then
        note "bench.sh: $* printed no address"
        exit 1
    fi
}

start_server "$work/tickers.url" "$bin" serve --addr 127.0.0.1:0
tickers=$server_url
template="$tickers/api/tickers/?start={start}&limit={limit}"

# ---- the pages every scrape must store, fetched once, apart from the tools --------
ref_pages=0
for g in scrape:10000 tls:10000 scrape_scaling:40000 scrape_rate:2000 adaptive:2000 inflight10k:10000 inflight100k:100000; do
    if selected "${g%%:*}" && [ "${g#*:}" -gt "$ref_pages" ]; then ref_pages=${g#*:}; fi
done
if [ "$ref_pages" -gt 0 ]; then
    note "reference: $ref_pages pages from $tickers"
    python3 "$validate" reference --base "$tickers" --pages "$ref_pages" --out "$work/ref.json"
fi
scrape_case() { # group name dir pages names extra_json cmd...
    local group=$1 name=$2 dir=$3 pages=$4 names=$5 extra=$6
    shift 6
    measure "$work/out" "$@"
    check_with pages --ref "$work/ref.json" --dir "$dir" --pages "$pages" --names "$names"
    record "$group" "$name" "$usage" "$check" "$extra"
}

# ---- load mode: CPU per request against nginx ----------------------------------------
static=
body_bytes=0
if selected load; then
    mkdir -p "$work/www" "$work/nginx"
    curl -sS --fail -o "$work/www/tickers.json" "$tickers/api/tickers/?start=0&limit=8"
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
        location = /nginx_status { stub_status; }
    }
}
CONF
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
    pids+=($!)
    static=http://127.0.0.1:$nginx_port/tickers.json
    for _ in $(seq 100); do curl -sf -o /dev/null "$static" && break; sleep 0.05; done
    curl -sS --fail -o /dev/null "$static"
    body_bytes=$(stat -c %s "$work/www/tickers.json")
    note "nginx on $static ($body_bytes bytes); tickers API on $tickers"

    # Requests nginx has taken so far (its stub_status counts the status request too).
    nginx_requests() { curl -sS --fail "http://127.0.0.1:$nginx_port/nginx_status" | awk 'NR == 3 {print $3}'; }
    # One load run: its exit code, the tool's own statuses and errors, and (against
    # nginx) the tool's request count against nginx's: in flight at the end of -z, up
    # to 2 x 50 requests reach nginx that the tool does not count.
    load_case() { # group name tool target(nginx|other) extra_json cmd...
        local group=$1 name=$2 tool=$3 target=$4 extra=$5 before after
        shift 5
        if [ "$target" = nginx ]; then before=$(nginx_requests); fi
        measure "$work/out" "$@"
        if [ "$target" = nginx ]; then
            after=$(nginx_requests)
            check_with load --tool "$tool" --report "$work/out" --server-requests $((after - before - 1)) --slack 100
        else
            check_with load --tool "$tool" --report "$work/out"
        fi
        record "$group" "$name" "$usage" "$check" "$extra"
    }

    load_round() { # group: keepalive or close
        local group=$1
        local wrk_extra=() oha_extra=() ours_extra=()
        if [ "$group" = close ]; then
            wrk_extra=(-H "Connection: close")
            oha_extra=(--disable-keepalive)
            ours_extra=(--no-keepalive)
        fi
        for rep in $(seq "$reps"); do
            load_case "$group" wrk wrk nginx "{\"rep\": $rep}" wrk -t2 -c50 -d"${secs}s" "${wrk_extra[@]}" "$static"
            load_case "$group" oha oha nginx "{\"rep\": $rep}" oha --no-tui --output-format json -z "${secs}s" -c 50 "${oha_extra[@]}" "$static"
            load_case "$group" coordinator coordinator nginx "{\"rep\": $rep}" "$bin" load -w 2 -c 50 -z "${secs}s" --json --quiet "${ours_extra[@]}" "$static"
        done
    }
    note "load mode, keep-alive"
    load_round keepalive
    note "load mode, a new connection per request"
    load_round close

    # The --rate path against the saturating path, each tool against itself; the rate
    # comes from the valid keep-alive runs (none: the group is recorded as failed).
    ours_rps=$(python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
r = [x["requests"] / x["wall_s"] for x in rows if x["group"] == "keepalive" and x["name"] == "coordinator"
     and x.get("exit_code") == 0 and x["valid"]]
print(int(statistics.median(r) * 0.8) if r else 0)
PY
    )
    if [ "$ours_rps" -gt 0 ]; then
        note "load mode, --rate $ours_rps/s"
        for rep in $(seq "$reps"); do
            load_case rate coordinator coordinator nginx "{\"rep\": $rep, \"rate\": $ours_rps}" "$bin" load -w 2 -c 50 -z "${secs}s" --rate "$ours_rps" --json --quiet "$static"
            load_case rate oha oha nginx "{\"rep\": $rep, \"rate\": $ours_rps}" oha --no-tui --output-format json -z "${secs}s" -c 50 -q "$ours_rps" "$static"
        done
    else
        note "load mode, --rate: no valid keep-alive run to take the rate from"
        record rate coordinator '{"exit_code": null, "rate": 0}' '{"valid": false, "why": "no valid keep-alive run to take the rate from"}'
    fi

    # Over HTTP/2 (h2c) against the built-in server: nginx here speaks HTTP/2 only over
    # TLS, and wrk not at all. One stream per connection, 50 connections, like the above.
    note "load mode over HTTP/2"
    for rep in $(seq "$reps"); do
        load_case h2load oha oha other "{\"rep\": $rep}" oha --no-tui --output-format json --http2 -z "${secs}s" -c 50 "$tickers/api/tickers/?start=0&limit=8"
        load_case h2load coordinator coordinator other "{\"rep\": $rep}" "$bin" load --http2 -w 2 -c 50 -z "${secs}s" --json --quiet "$tickers/api/tickers/?start=0&limit=8"
    done

    note "scaling: 1 and 2 workers"
    for w in 1 2; do
        load_case scaling "coordinator -w $w" coordinator nginx '{}' "$bin" load -w "$w" -c 50 -z "${secs}s" --json --quiet "$static"
    done
fi

# ---- scrape mode: 10,000 pages of the tickers API to files ------------------------
if selected scrape; then
    pages=10000
    range=0..$((pages * 10))
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
        rm -rf "$work/s"
        mkdir -p "$work/s/curl"
        scrape_case scrape coordinator "$work/s/ours" "$pages" range "{\"rep\": $rep}" \
            "$bin" --workers 2 --url "$template" --range "$range" --batch 10 --out "$work/s/ours" --json --quiet
        rm -rf "$work/s/ours"
        scrape_case scrape "coordinator --http2" "$work/s/ours" "$pages" range "{\"rep\": $rep}" \
            "$bin" --workers 2 --http2 --url "$template" --range "$range" --batch 10 --out "$work/s/ours" --json --quiet
        scrape_case scrape "python asyncio+aiohttp" "$work/s/py" "$pages" range "{\"rep\": $rep}" \
            python3 "$repo/scripts/bench/peer_asyncio.py" --url-template "$template" --range "$range" --batch 10 --concurrency 256 --out "$work/s/py"
        scrape_case scrape "curl --parallel" "$work/s/curl" "$pages" range "{\"rep\": $rep}" \
            curl -sS --fail --parallel --parallel-max 256 --output-dir "$work/s/curl" -K "$work/curl.cfg"
    done
fi

# ---- HTTPS: scrape and load mode against nginx over TLS ----------------------------
# A private CA made here signs a certificate for 127.0.0.1 and localhost (ECDSA P-256).
# nginx (1 worker; TLS 1.2 and 1.3, session cache and tickets on, as a real server)
# serves the same 10,000 tickers pages as the scrape group, as files, and the load
# group's small JSON page, on two ports: one that offers HTTP/2 and HTTP/1.1 by ALPN,
# and one that speaks HTTP/1.1 only (this tool's scrapes take HTTP/2 wherever the
# server offers it, so that is where its HTTP/1.1 client over TLS is measured). Its
# access log gives every request's protocol, connection and whether its TLS session
# was resumed: load runs are checked against its count, each run's protocol against
# the one asked for, and the tables show how many connections (and so handshakes) each
# tool made. The worker's CPU time (from /proc) is recorded around each run as the
# server's share.
tls_static=
tls_listen=
if selected tls; then
    t=$work/tls
    mkdir -p "$t/www/t" "$t/nginx"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj /CN=bench-private-ca -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$t/san.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 30 -extfile "$t/san.ext" -out "$t/server.pem" 2>/dev/null

    # The pages nginx serves: page i (start=10i) as www/t/{10i}_10.json, fetched from the
    # tickers API apart from the reference that the scrapes are checked against.
    tls_pages=10000
    python3 - "$tickers" "$tls_pages" "$t/fetch.cfg" <<'PY'
import sys
base, pages, cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(cfg, "w") as f:
    for i in range(pages):
        s = i * 10
        f.write(f'url = "{base}/api/tickers/?start={s}&limit=10"\noutput = "{s}_10.json"\n')
PY
    if ! curl -sS --fail --parallel --parallel-max 16 --output-dir "$t/www/t" -K "$t/fetch.cfg" 2>"$t/fetch.err"; then
        note "bench.sh: fetching the pages for nginx: $(tail -n 3 "$t/fetch.err")"
        exit 1
    fi
    curl -sS --fail -o "$t/www/tickers.json" "$tickers/api/tickers/?start=0&limit=8"
    # This tool fetches each host's robots.txt once by default: nginx answers as a site
    # that allows everything (a 404 would too, but every status is checked to be a 200).
    printf 'User-agent: *\nAllow: /\n' >"$t/www/robots.txt"

    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    tls_port=$(free_port)
    tls_port1=$(free_port)
    while [ "$tls_port1" = "$tls_port" ]; do tls_port1=$(free_port); done
    # HTTP/2 is switched on by `http2 on;` from nginx 1.25.1 on, by `listen ... http2` before.
    ngx_version=$(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9.]*\).*|\1|p')
    if [ "$(printf '%s\n' 1.25.1 "$ngx_version" | sort -V | head -n1)" = 1.25.1 ]; then
        tls_listen="listen 127.0.0.1:$tls_port ssl; http2 on;"
    else
        tls_listen="listen 127.0.0.1:$tls_port ssl http2;"
    fi
    # What both servers serve.
    tls_site="ssl_certificate $t/server.pem;
        ssl_certificate_key $t/server.key;
        root $t/www;
        location = /robots.txt { default_type text/plain; }
        location = /api/tickers/ {
            if (\$args !~ \"^start=[0-9]+&limit=[0-9]+\$\") { return 404; }
            try_files /t/\${arg_start}_\${arg_limit}.json =404;
        }"
    tls_log=$t/nginx/access.log
    cat >"$t/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $t/nginx/nginx.pid;
error_log $t/nginx/error.log;
events { worker_connections 65536; }
http {
    default_type application/json;
    log_format bench '\$status \$server_protocol \$ssl_protocol \$ssl_session_reused \$connection';
    access_log $tls_log bench buffer=64k flush=1s;
    keepalive_requests 1000000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {
        $tls_listen
        $tls_site
    }
    server {
        listen 127.0.0.1:$tls_port1 ssl;
        $tls_site
    }
}
CONF
    nginx -p "$t/nginx" -c "$t/nginx/nginx.conf" -g 'daemon off;' &
    tls_nginx=$!
    pids+=("$tls_nginx")
    tls_base=https://127.0.0.1:$tls_port
    tls_base1=https://127.0.0.1:$tls_port1
    tls_static=$tls_base/tickers.json
    for _ in $(seq 100); do curl -sf --cacert "$t/ca.pem" -o /dev/null "$tls_static" && break; sleep 0.05; done
    curl -sS --fail --cacert "$t/ca.pem" -o /dev/null "$tls_static"
    for base in "$tls_base" "$tls_base1"; do
        curl -sS --fail --cacert "$t/ca.pem" -o "$t/page1.json" "$base/api/tickers/?start=10&limit=10"
        if ! cmp -s "$t/page1.json" "$t/www/t/10_10.json"; then
            note "bench.sh: nginx does not serve the tickers page it was given ($base)"
            exit 1
        fi
    done
    note "nginx $ngx_version on $tls_base ($tls_listen) and $tls_base1 (HTTP/1.1 only); tickers API on $tickers"

    # nginx runs one worker: its user + system time in clock ticks (0 when it cannot be read).
    tls_worker=$(cat "/proc/$tls_nginx/task/$tls_nginx/children" 2>/dev/null || true)
    tls_worker=${tls_worker%% *}
    hz=$(getconf CLK_TCK)
    server_ticks() {
        if [ -n "$tls_worker" ] && [ -r "/proc/$tls_worker/stat" ]; then
            awk '{print $14 + $15}' "/proc/$tls_worker/stat"
        else
            echo 0
        fi
    }
    # nginx writes its log through a 64 KiB buffer that it flushes within a second: a
    # run's lines are all there 1.2 s after it ended (and the ones before it are too).
    sleep 1.2
    # One run: sets $usage and $status (measure), $log_from (where its lines start in
    # the access log) and $server_cpu (the nginx worker's CPU seconds meanwhile).
    tls_measure() { # cmd...
        local ticks
        log_from=$(stat -c %s "$tls_log")
        ticks=$(server_ticks)
        measure "$work/out" "$@"
        sleep 1.2
        server_cpu=$(awk -v a="$ticks" -v b="$(server_ticks)" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}')
    }
    # A scrape of the 10,000 pages into dir: the files against the reference, nginx's
    # log for the protocol (- for any), the statuses and at least one request a page.
    tls_scrape_case() { # rep name dir protocol cmd...
        local rep=$1 name=$2 dir=$3 protocol=$4 pages_check proto=()
        shift 4
        if [ "$protocol" != - ]; then proto=(--protocol "$protocol"); fi
        rm -rf "$dir"
        mkdir -p "$dir"
        tls_measure "$@"
        check_with pages --ref "$work/ref.json" --dir "$dir" --pages "$tls_pages" --names range
        pages_check=$check
        check_with access-log --log "$tls_log" --offset "$log_from" --requests "$tls_pages" "${proto[@]}"
        record tls_scrape "$name" "$usage" "$pages_check" "$check" "{\"rep\": $rep, \"server_cpu_s\": $server_cpu}"
        rm -rf "$dir"
    }
    # A load run: the tool's statuses and errors, its count against nginx's log (in
    # flight at the end of -z, up to 2 x 50 requests reach nginx that the tool does not
    # count), and the protocol.
    tls_load_case() { # group name tool protocol rep cmd...
        local group=$1 name=$2 tool=$3 protocol=$4 rep=$5
        shift 5
        tls_measure "$@"
        check_with load --tool "$tool" --report "$work/out" --access-log "$tls_log" --log-offset "$log_from" \
            --protocol "$protocol" --slack 100
        record "$group" "$name" "$usage" "$check" "{\"rep\": $rep, \"server_cpu_s\": $server_cpu}"
    }

    # Scrape mode: 100 requests in flight for every tool (this tool: 2 workers x 50, its
    # default of a worker per core, and 1 worker x 100, as with a server on the same
    # cores: see "How many workers" in docs/guide.md).
    # Against the first port this tool and curl both choose HTTP/2 by ALPN (the protocol
    # is not asserted there: it is what nginx logs); against the HTTP/1.1-only port both
    # keep a pool of HTTP/1.1 connections. aiohttp speaks HTTP/1.1 only.
    for base in "$tls_base" "$tls_base1"; do
        python3 - "$base" "$tls_pages" "$t/curl-${base##*:}.cfg" <<'PY'
import sys
base, pages, cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(cfg, "w") as f:
    for i in range(pages):
        s = i * 10
        f.write(f'url = "{base}/api/tickers/?start={s}&limit=10"\noutput = "batch{s}-{s + 10}.json"\n')
PY
    done
    tls_template="$tls_base/api/tickers/?start={start}&limit={limit}"
    tls_template1="$tls_base1/api/tickers/?start={start}&limit={limit}"
    tls_range=0..$((tls_pages * 10))
    for rep in $(seq "$reps"); do
        note "HTTPS scrape mode, rep $rep"
        tls_scrape_case "$rep" coordinator "$work/s/ours" - \
            "$bin" --workers 2 --concurrency 50 --cacert "$t/ca.pem" --url "$tls_template" --range "$tls_range" --batch 10 --out "$work/s/ours" --json --quiet
        tls_scrape_case "$rep" "coordinator --http2" "$work/s/ours" HTTP/2.0 \
            "$bin" --workers 2 --concurrency 50 --http2 --cacert "$t/ca.pem" --url "$tls_template" --range "$tls_range" --batch 10 --out "$work/s/ours" --json --quiet
        tls_scrape_case "$rep" "coordinator, HTTP/1.1 server" "$work/s/ours" HTTP/1.1 \
            "$bin" --workers 2 --concurrency 50 --cacert "$t/ca.pem" --url "$tls_template1" --range "$tls_range" --batch 10 --out "$work/s/ours" --json --quiet
        tls_scrape_case "$rep" "coordinator -w 1" "$work/s/ours" - \
            "$bin" --workers 1 --concurrency 100 --cacert "$t/ca.pem" --url "$tls_template" --range "$tls_range" --batch 10 --out "$work/s/ours" --json --quiet
        tls_scrape_case "$rep" "coordinator -w 1 --http2" "$work/s/ours" HTTP/2.0 \
            "$bin" --workers 1 --concurrency 100 --http2 --cacert "$t/ca.pem" --url "$tls_template" --range "$tls_range" --batch 10 --out "$work/s/ours" --json --quiet
        tls_scrape_case "$rep" "coordinator -w 1, HTTP/1.1 server" "$work/s/ours" HTTP/1.1 \
            "$bin" --workers 1 --concurrency 100 --cacert "$t/ca.pem" --url "$tls_template1" --range "$tls_range" --batch 10 --out "$work/s/ours" --json --quiet
        tls_scrape_case "$rep" "curl --parallel" "$work/s/curl" - \
            curl -sS --fail --parallel --parallel-max 100 --cacert "$t/ca.pem" --output-dir "$work/s/curl" -K "$t/curl-$tls_port.cfg"
        tls_scrape_case "$rep" "curl --parallel, HTTP/1.1 server" "$work/s/curl" HTTP/1.1 \
            curl -sS --fail --parallel --parallel-max 100 --cacert "$t/ca.pem" --output-dir "$work/s/curl" -K "$t/curl-$tls_port1.cfg"
        tls_scrape_case "$rep" "python asyncio+aiohttp" "$work/s/py" HTTP/1.1 \
            python3 "$repo/scripts/bench/peer_asyncio.py" --url-template "$tls_template" --range "$tls_range" --batch 10 --concurrency 100 --cacert "$t/ca.pem" --out "$work/s/py"
    done

    # Load mode: 50 connections, against the small page. wrk cannot take a CA and does not
    # verify; oha is told not to (--insecure); this tool verifies against the CA.
    # oha keeps its connections with --http2 --disable-keepalive: HTTP/2 with a new
    # connection per request has this tool's row only.
    for rep in $(seq "$reps"); do
        note "HTTPS load mode, keep-alive, rep $rep"
        tls_load_case tls_keepalive wrk wrk HTTP/1.1 "$rep" wrk -t2 -c50 -d"${secs}s" "$tls_static"
        tls_load_case tls_keepalive oha oha HTTP/1.1 "$rep" oha --no-tui --output-format json -z "${secs}s" -c 50 --insecure "$tls_static"
        tls_load_case tls_keepalive coordinator coordinator HTTP/1.1 "$rep" "$bin" load -w 2 -c 50 -z "${secs}s" --json --quiet --cacert "$t/ca.pem" "$tls_static"
        tls_load_case tls_keepalive "oha --http2" oha HTTP/2.0 "$rep" oha --no-tui --output-format json -z "${secs}s" -c 50 --insecure --http2 "$tls_static"
        tls_load_case tls_keepalive "coordinator --http2" coordinator HTTP/2.0 "$rep" "$bin" load --http2 -w 2 -c 50 -z "${secs}s" --json --quiet --cacert "$t/ca.pem" "$tls_static"
        tls_load_case tls_keepalive "coordinator -w 1 --http2" coordinator HTTP/2.0 "$rep" "$bin" load --http2 -w 1 -c 50 -z "${secs}s" --json --quiet --cacert "$t/ca.pem" "$tls_static"
        note "HTTPS load mode, a new connection per request, rep $rep"
        tls_load_case tls_close wrk wrk HTTP/1.1 "$rep" wrk -t2 -c50 -d"${secs}s" -H "Connection: close" "$tls_static"
        tls_load_case tls_close oha oha HTTP/1.1 "$rep" oha --no-tui --output-format json -z "${secs}s" -c 50 --insecure --disable-keepalive "$tls_static"
        tls_load_case tls_close coordinator coordinator HTTP/1.1 "$rep" "$bin" load -w 2 -c 50 -z "${secs}s" --json --quiet --cacert "$t/ca.pem" --no-keepalive "$tls_static"
        tls_load_case tls_close "coordinator --http2" coordinator HTTP/2.0 "$rep" "$bin" load --http2 -w 2 -c 50 -z "${secs}s" --json --quiet --cacert "$t/ca.pem" --no-keepalive "$tls_static"
    done
fi

# ---- scaling with workers against a server that is not the bottleneck ---------------
# Each page is answered after 20 ms, so the server mostly waits: with 100 requests in
# flight per worker, throughput should grow with the workers until CPU runs out.
if selected scrape_scaling; then
    start_server "$work/d20.url" "$bin" serve --addr 127.0.0.1:0 --delay 20..20
    d20="$server_url/api/tickers/?start={start}&limit={limit}"
    for w in 1 2; do
        note "scrape scaling: $w worker(s), 20 ms per page"
        rm -rf "$work/scale"
        scrape_case scrape_scaling "$w" "$work/scale" 40000 range '{}' \
            "$bin" --workers "$w" --concurrency 100 --url "$d20" --range 0..400000 --batch 10 --out "$work/scale" --json --quiet
    done
fi

# ---- --rate in scrape mode: 2,000 requests at 200/s over 2 workers (10 s) ------------
if selected scrape_rate; then
    note "scrape mode --rate 200: 2,000 requests"
    rm -rf "$work/rate"
    measure "$work/out" "$bin" --workers 2 --url "$template" --range 0..20000 --batch 10 --rate 200 --out "$work/rate" --quiet
    check_with pages --ref "$work/ref.json" --dir "$work/rate" --pages 2000 --names range
    pages_check=$check
    check_with rate --dir "$work/rate" --pages 2000 --seconds 10
    record scrape_rate coordinator "$usage" "$pages_check" "$check" '{"rep": 1}'
fi

# ---- adaptive throttling: 2,000 batches against a server that allows 200 a second ------
# `serve --max-rate 200` answers 429 with Retry-After: 1 to every request past the 200th
# of a second of the clock, so the ideal run takes 10 s. The group compares adaptive
# throttling (the default) with --adaptive off, at the default concurrency (256 per
# worker: 512 requests could go before the first answer) and at -c 64. --robots ignore:
# every request is a batch's, so requests - ok batches are the requests answered 429.
# --retries 20, not 10: with --adaptive off a batch can use up its attempts and the run
# exits 1, which this suite records as failed and keeps out of every figure; the
# attempts are raised so that those runs complete and stay comparable (the most any
# batch took is recorded, from the manifest).
if selected adaptive; then
    start_server "$work/limited.url" "$bin" serve --addr 127.0.0.1:0 --max-rate 200
    limited="$server_url/api/tickers/?start={start}&limit={limit}"
    # The server counts per second of the clock: a run that started in the second the
    # previous one ended in would find part of that second's budget used. Each run
    # starts at least 1.1 s after the previous one ended (or the server started).
    adaptive_end=$(date +%s.%N)
    adaptive_case() { # rep name flags...
        local rep=$1 name=$2 pause pages_check
        shift 2
        pause=$(awk -v end="$adaptive_end" -v now="$(date +%s.%N)" 'BEGIN {p = end + 1.1 - now; printf "%.3f", (p > 0 ? p : 0)}')
        sleep "$pause"
        rm -rf "$work/adaptive"
        measure "$work/out" "$bin" --workers 2 "$@" --url "$limited" --range 0..20000 --batch 10 --retries 20 \
            --robots ignore --out "$work/adaptive" --json --quiet
        adaptive_end=$(date +%s.%N)
        check_with pages --ref "$work/ref.json" --dir "$work/adaptive" --pages 2000 --names range
        pages_check=$check
        check_with throttled --summary "$work/out" --dir "$work/adaptive" --pages 2000
        record adaptive "$name" "$usage" "$pages_check" "$check" "{\"rep\": $rep}"
    }
    for rep in $(seq "$reps"); do
        note "adaptive throttling against --max-rate 200, rep $rep"
        adaptive_case "$rep" coordinator
        adaptive_case "$rep" "coordinator --adaptive off" --adaptive off
        adaptive_case "$rep" "coordinator -c 64" -c 64
        adaptive_case "$rep" "coordinator -c 64 --adaptive off" -c 64 --adaptive off
    done
    rm -rf "$work/adaptive"
fi

# ---- the seed's experiment: 10,000 requests in flight, each answered after 2-4 s ----
if selected inflight10k || selected inflight100k; then
    start_server "$work/slow.url" "$bin" serve --addr 127.0.0.1:0 --delay 2000..4000
    slow=$server_url
fi
if selected inflight10k; then
    note "10,000 in flight on $slow"
    for rep in $(seq "$reps"); do
        rm -rf "$work/seed"
        scrape_case inflight10k coordinator "$work/seed" 10000 range "{\"rep\": $rep}" \
            "$bin" --workers 2 --concurrency 5000 --url "$slow/api/tickers/?start={start}&limit={limit}" --range 0..100000 --batch 10 --out "$work/seed" --timeout 60s --json --quiet
        rm -rf "$work/seed"
        scrape_case inflight10k "coordinator --http2" "$work/seed" 10000 range "{\"rep\": $rep}" \
            "$bin" --workers 2 --concurrency 5000 --http2 --http2-streams 1000 --url "$slow/api/tickers/?start={start}&limit={limit}" --range 0..100000 --batch 10 --out "$work/seed" --timeout 60s --json --quiet
        rm -rf "$work/seed"
        scrape_case inflight10k "python asyncio+aiohttp" "$work/seed" 10000 range "{\"rep\": $rep}" \
            python3 "$repo/scripts/bench/inflight.py" --url "$slow/api/tickers/?start={start}&limit=10" --count 10000 --out "$work/seed"
    done
fi

# 100,000 in flight. One source address reaches one server port through ~28K ephemeral
# ports, and one process may hold at most `ulimit -Hn` descriptors (the coordinator raises
# its soft limit to that; raising the hard limit needs privileges): so the requests are
# spread over eight servers on eight ports, and over eight worker processes.
if selected inflight100k; then
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
    scrape_case inflight100k coordinator "$work/seed" 100000 list "{\"nofile\": $nofile, \"processes\": $servers}" \
        "$bin" --workers "$servers" --concurrency "$per_worker" --urls "$work/urls100k" --out "$work/seed" --timeout 60s --json --quiet

    # The same 100,000 over HTTP/2: ten thousand streams to a connection, so two workers
    # hold ten sockets to one server between them, far under the open-file limit (and the
    # server's answers to a connection leave several to a write).
    note "100,000 in flight over HTTP/2 on $slow"
    for rep in $(seq "$reps"); do
        rm -rf "$work/seed"
        scrape_case inflight100k "coordinator --http2" "$work/seed" 100000 range "{\"nofile\": $nofile, \"processes\": 1, \"workers\": 2, \"rep\": $rep}" \
            "$bin" --workers 2 --concurrency 50000 --http2 --http2-streams 10000 --url "$slow/api/tickers/?start={start}&limit={limit}" --range 0..1000000 --batch 10 --out "$work/seed" --timeout 60s --json --quiet
    done
fi

# ---- micro-benchmarks --------------------------------------------------------------
: >"$work/criterion.txt"
if selected criterion; then
    note "criterion micro-benchmarks"
    if cargo bench -q -p shared --bench ipc -- --warm-up-time 1 --measurement-time 3 >"$work/criterion.raw" 2>"$work/criterion.err"; then
        if ! grep -E '^[a-z].*time:|^ +time:|^[a-z]' "$work/criterion.raw" >"$work/criterion.txt"; then
            echo "(cargo bench printed no timings)" >"$work/criterion.txt"
        fi
    else
        code=$?
        note "criterion failed (exit $code): $(tail -n 5 "$work/criterion.err")"
        echo "(failed: cargo bench exited with $code)" >"$work/criterion.txt"
    fi
fi

mkdir -p -- "$(dirname -- "$report")"
python3 "$repo/scripts/bench/report.py" "$results" "$work/criterion.txt" \
    --seconds "$secs" --reps "$reps" --body-bytes "$body_bytes" --static-url "${static:-}" \
    --tls-static-url "$tls_static" --tls-listen "$tls_listen" >"$report"
note "wrote $report"

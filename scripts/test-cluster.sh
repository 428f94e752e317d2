#!/usr/bin/env bash
# The orchestration examples run for real on this one Linux machine, as root:
#
#   slurm  a single-node Slurm cluster (Debian's slurmctld, slurmd, munge; the daemons in
#          the foreground under this script, a generated slurm.conf naming this node with
#          2 CPUs, a generated munge key) runs scripts/slurm-array.sh as an array of 4
#          (`sbatch --wait`), then `coordinator verify`; then again with array task 1
#          cancelled mid-run (scancel), re-submitted as the `--resume` command that
#          `verify --print-command` prints, and verified again.
#   ssh    a real sshd on three loopback ports (generated host and client keys) is three
#          "hosts"; scripts/parallel-ssh.sh runs a shard on each with GNU parallel
#          --sshlogin, twice (the second pass resumes), and verifies.
#   netns  three network namespaces as "machines" and a fourth running `coordinator
#          serve --delay`, joined by veth pairs on a bridge (198.18.0.0/24, a test range,
#          only inside those namespaces); one shard per machine, one machine's
#          coordinator SIGKILLed mid-run and its shard resumed there; verified together,
#          every batch in the manifests exactly once with its file's bytes; pages/s per
#          machine and in total.
#
# The guide's two cluster examples, its `sh slurm` and `sh ssh` blocks, are run here word
# for word (run_guide_block), in the slurm and ssh steps; tests/docs.rs runs its other
# `sh` blocks and checks that these two parse and are run here.
#
# Kubernetes is not run here (no cluster): the Indexed Job's pod command is run by
# tests/shards.rs (the_kubernetes_pod_command_runs_every_index_then_resumes_and_verifies).
#
#   scripts/test-cluster.sh                       # everything, as in .ci/run
#   TEST_CLUSTER_ONLY=netns,ssh scripts/test-cluster.sh
#
# It installs what is missing with apt-get, builds `cargo build -p coordinator` (or uses
# COORDINATOR=/path/to/binary), and works in a fresh /tmp/test-cluster.* directory,
# removed on success (unless TEST_CLUSTER_KEEP=1) and kept, with every daemon's log, on
# failure. Every wait is
# bounded; the whole run takes well under 10 minutes on 2 cores. On any exit a trap
# stops the daemons and processes it started, by pid, and deletes its namespaces (the
# veths live only inside them). A step that cannot run here (not root, no network
# namespaces, a package that will not install) fails the script: it never passes by
# skipping.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
only=${TEST_CLUSTER_ONLY:-slurm,ssh,netns}
t_begin=$(date +%s.%N)

say() { printf '== %s\n' "$*"; }
fail() {
    printf 'test-cluster: FAIL: %s\n' "$*" >&2
    exit 1
}
wants() { [[ ",$only," == *",$1,"* ]]; }
seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# Polls `cmd...` every 0.1 s until it succeeds; fails the script after LIMIT seconds.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${limit}s waiting for $what"
        fi
        sleep 0.1
    done
}

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages, starts sshd, Slurm and munge, and makes network namespaces)"
for section in ${only//,/ }; do
    case $section in
        slurm | ssh | netns) ;;
        *) fail "TEST_CLUSTER_ONLY: unknown section '$section' (slurm, ssh, netns)" ;;
    esac
done

# --- state the trap cleans up ------------------------------------------------------
work=""
daemons=()    # "name pid" of every daemon and long-lived process started here
namespaces=() # network namespaces made here
made_privsep=""
made_policy=""
step="setup"

stop_pid() { # TERM, then KILL after 5 s
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "test-cluster: pid $pid ignored SIGTERM for 5s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

# Every process started here, directly or through Slurm, sshd or a namespace, carries
# TEST_CLUSTER_RUN=$work in its environment (sshd sets it for its sessions).
leftovers() {
    local environ pid
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}
        pid=${pid%/environ}
        [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
        if grep -qsxzF "TEST_CLUSTER_RUN=$work" "$environ"; then
            echo "$pid"
        fi
    done
}

cleanup() {
    local status=$? entry pid ns left
    set +e
    trap - EXIT INT TERM
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    if [ -n "$work" ]; then
        # Slurm first: jobs run under slurmstepd, which outlives slurmd.
        if [ -n "${SLURM_CONF:-}" ] && timeout 10 squeue -h >/dev/null 2>&1; then
            timeout 10 squeue -h -o %A | xargs -r timeout 10 scancel 2>/dev/null
            for _ in $(seq 50); do
                [ -z "$(timeout 5 squeue -h 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
        for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
            entry=${daemons[i]}
            stop_pid "${entry#* }"
        done
        left=$(leftovers)
        if [ -n "$left" ]; then
            for pid in $left; do
                echo "test-cluster: left behind: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)); stopping it" >&2
                kill -TERM "$pid" 2>/dev/null
            done
            sleep 1
            for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
            [ "$status" = 0 ] && status=1
        fi
    fi
    for ns in "${namespaces[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            echo "test-cluster: pid $pid still in namespace $ns; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
            [ "$status" = 0 ] && status=1
        done
        ip netns delete "$ns" || status=1
    done
    [ -n "$made_privsep" ] && rmdir /run/sshd 2>/dev/null
    if [ "$status" = 0 ]; then
        [ -n "$work" ] && [ -z "${TEST_CLUSTER_KEEP:-}" ] && rm -rf -- "$work"
        echo "test-cluster: ok ($(seconds_since "$t_begin") s)"
    else
        echo "test-cluster: FAILED (exit $status) in step: $step" >&2
        [ -n "$work" ] && echo "test-cluster: logs and outputs kept in $work" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages ----------------------------------------------------------------------
step="install"
need=(jq ss ip ps)
packages=(jq iproute2 procps)
if wants slurm; then
    need+=(slurmctld slurmd sbatch munged)
    packages+=(slurmctld slurmd slurm-client munge)
fi
if wants ssh; then
    need+=(sshd ssh ssh-keygen parallel)
    packages+=(openssh-server openssh-client parallel)
fi
missing=()
for cmd in "${need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
done
if ((${#missing[@]})); then
    say "installing ${packages[*]} (missing: ${missing[*]})"
    command -v apt-get >/dev/null || fail "no apt-get to install ${missing[*]}"
    # No package may start its daemon: this script starts and stops them itself.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    timeout 300 apt-get update -qq || fail "apt-get update"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null || fail "apt-get install ${packages[*]}"
    if [ -n "$made_policy" ]; then
        rm -f /usr/sbin/policy-rc.d
        made_policy=""
    fi
fi
export PATH=$PATH:/usr/sbin:/sbin

# --- the binary --------------------------------------------------------------------
step="build"
work=$(mktemp -d /tmp/test-cluster.XXXXXX)
chmod 755 "$work" # munged wants its socket's directories searchable by all
export TEST_CLUSTER_RUN=$work
mkdir -p "$work/bin"
if [ -z "${COORDINATOR:-}" ]; then
    say "cargo build -p coordinator"
    (cd "$here" && timeout 900 cargo build -q -p coordinator) || fail "cargo build -p coordinator"
    COORDINATOR=${CARGO_TARGET_DIR:-$here/target}/debug/coordinator
fi
# A copy, so that a rebuild in the tree during the run changes nothing here; and the
# only `coordinator` on PATH, for the scripts, Slurm's jobs and the ssh sessions.
cp -- "$COORDINATOR" "$work/bin/coordinator"
export PATH=$work/bin:$PATH
unset COORDINATOR
# Nothing of a scheduler this script may itself run under leaks into `--shard auto`.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(SLURM_|SBATCH_|SRUN_|SALLOC_|JOB_COMPLETION|COORDINATOR_SHARD_)' || true)

# A TCP port below the kernel's ephemeral range that no socket on this machine uses.
free_port() {
    local port low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    for _ in $(seq 100); do
        port=$((10000 + RANDOM % (low > 12000 ? low - 10000 : 2000)))
        if [ -z "$(ss -Htan "( sport = :$port or dport = :$port )")" ]; then
            echo "$port"
            return
        fi
    done
    fail "no free port found"
}

# The built-in API on 127.0.0.1 (for Slurm and ssh), with latency.
start_local_server() {
    coordinator serve --addr 127.0.0.1:0 --delay 20..40 >"$work/serve.addr" 2>"$work/serve.log" &
    daemons+=("serve $!")
    wait_for 10 "coordinator serve to print its address" test -s "$work/serve.addr"
    base=$(head -n1 "$work/serve.addr")
    template="$base/api/tickers/?start={start}&limit={limit}"
}
base=""
template=""

# Checks what `verify` checks, from the manifests themselves: every batch 0..N-1 has
# exactly one line among the DIRs, in the shard K/M its directory holds (K from the
# name shard-K), naming a file that is there with the line's `bytes`.
check_manifests() {
    local n=$1 m=$2
    shift 2
    local dir k
    for dir in "$@"; do
        k=${dir##*shard-}
        {
            find "$dir" -maxdepth 1 -type f -name 'batch*' -printf 'F\t%f\t%s\n'
            jq -r '["L", .index, (.file // "-"), .bytes] | @tsv' "$dir/manifest.jsonl"
        } | awk -F'\t' -v k="$k" -v m="$m" -v dir="$dir" '
            $1 == "F" { size[$2] = $3; next }
            {
                if ($2 % m != k) { print dir ": batch " $2 " is not of shard " k "/" m; bad = 1 }
                if ($3 == "-") { print dir ": batch " $2 " failed"; bad = 1 }
                else if (!($3 in size)) { print dir ": " $3 " is missing"; bad = 1 }
                else if (size[$3] != $4) { print dir ": " $3 " has " size[$3] " bytes, the manifest " $4; bad = 1 }
                print "I\t" $2
            }
            END { exit bad }' || fail "manifest check of $dir"
    done | awk -F'\t' -v n="$n" '
        $1 != "I" { print; next }
        { seen[$2]++ }
        END {
            for (i in seen) if (seen[i] > 1) { print "batch " i ": " seen[i] " manifest lines"; bad = 1 }
            for (i = 0; i < n; i++) if (!(i in seen)) { print "batch " i ": no manifest line"; bad = 1 }
            if (length(seen) != n) { print length(seen) " batches, expected " n; bad = 1 }
            exit bad
        }' >&2 || fail "the manifests do not hold each of the $n batches exactly once with its file"
    echo "manifests: each of the $n batches exactly once, files of the recorded bytes"
}

# Runs the guide's `sh TAG` block (docs/guide.md) word for word, as tests/docs.rs runs
# the others: by `sh -e` in the fresh directory DIR, in which `scripts` is the
# repository's, with `coordinator` on PATH, $BASE the local server and $API its tickers
# API. It must exit 0 within LIMIT seconds with no `error:` on stderr; its output is kept
# in DIR/block.out and DIR/block.log.
run_guide_block() { # TAG DIR LIMIT
    local tag=$1 dir=$2 limit=$3 block status=0
    block=$(awk -v info="\`\`\`sh $tag" '
        $0 == info { inside = 1; n++; next }
        inside && $0 == "```" { inside = 0; next }
        inside { print }
        END { exit (n != 1) }' "$here/docs/guide.md") ||
        fail "docs/guide.md does not hold exactly one \`sh $tag\` block"
    mkdir -p "$dir"
    ln -s "$here/scripts" "$dir/scripts"
    echo "the guide's \`sh $tag\` block:"
    printf '%s\n' "$block" | sed 's/^/    /'
    (cd "$dir" && BASE=$base API="$base/api/tickers/" timeout "$limit" sh -e -c "$block") \
        >"$dir/block.out" 2>"$dir/block.log" || status=$?
    [ "$status" = 0 ] || fail "the guide's \`sh $tag\` block: exit $status: $(cat "$dir/block.log")"
    if grep -q 'error:' "$dir/block.log"; then
        fail "the guide's \`sh $tag\` block: an error on stderr: $(cat "$dir/block.log")"
    fi
}

# `coordinator verify DIR...` must say complete (exit 0).
verify_complete() {
    local log=$1
    shift
    coordinator verify "$@" >"$log.out" 2>"$log" || {
        cat "$log" >&2
        fail "verify $*: not complete"
    }
    grep -x complete "$log" >/dev/null || fail "verify said no 'complete' ($log)"
    grep '^ok:' "$log"
}

# `verify --print-command` of incomplete DIRs: exactly one command, for SHARD, with
# --resume; sets `resume_cmd` and `gaps`.
resume_command_for() {
    local shard=$1 log=$2
    shift 2
    local status=0
    coordinator verify "$@" --print-command >"$log.out" 2>"$log" || status=$?
    [ "$status" = 1 ] || fail "verify of a cut-short run: exit $status, expected 1 (incomplete); see $log"
    [ "$(wc -l <"$log.out")" = 1 ] || fail "verify --print-command printed $(wc -l <"$log.out") commands, expected 1"
    resume_cmd=$(cat "$log.out")
    [[ $resume_cmd == coordinator\ * && $resume_cmd == *" --shard $shard "* && $resume_cmd == *" --resume" ]] ||
        fail "unexpected command: $resume_cmd"
    gaps=$(sed -n 's/^gaps: \([0-9]*\) .*/\1/p' "$log")
    [ "${gaps:-0}" -gt 0 ] || fail "no gaps reported in $log"
    echo "verify: incomplete, $gaps gaps; it prints: $resume_cmd"
}
resume_cmd=""
gaps=0

# --- Slurm -------------------------------------------------------------------------
run_slurm() {
    step="slurm: start munged, slurmctld, slurmd"
    local dir=$work/slurm node
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/run"
    chmod 700 "$dir/munge"
    node=$(uname -n)
    node=${node%%.*}
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged -F --key-file="$dir/munge/munge.key" --socket="$dir/run/munge.socket" \
        --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/seed" \
        --log-file="$dir/munged.log" >"$dir/munged.out" 2>&1 &
    daemons+=("munged $!")
    wait_for 10 "munged's socket" test -S "$dir/run/munge.socket"
    munge -S "$dir/run/munge.socket" -n | unmunge -S "$dir/run/munge.socket" >/dev/null ||
        fail "munge cannot encode and decode a credential"

    local ctld_port slurmd_port
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    [ "$ctld_port" != "$slurmd_port" ] || fail "the same free port twice; run again"
    cat >"$dir/slurm.conf" <<EOF
ClusterName=testcluster
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/run/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -D -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
    daemons+=("slurmctld $!")
    slurmd -D -N "$node" -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 &
    daemons+=("slurmd $!")
    node_idle() {
        local entry name
        for entry in "${daemons[@]}"; do
            name=${entry% *}
            kill -0 "${entry#* }" 2>/dev/null || fail "$name exited: $(tail -n 5 "$dir/$name.out")"
        done
        [ "$(timeout 5 sinfo -h -n "$node" -o %t 2>/dev/null)" = idle ]
    }
    wait_for 30 "node $node to be idle in sinfo" node_idle
    say "slurm: cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"

    start_local_server
    local t job state
    # Run 1: the array of 4 to the end. One CPU a task: 2 run at a time.
    step="slurm: sbatch --wait --array=0-3"
    mkdir -p "$dir/run1"
    t=$(date +%s.%N)
    (cd "$dir/run1" && SCRAPE_URL=$template SCRAPE_RANGE=0..2000 OUT_ROOT=$dir/run1 \
        timeout 120 sbatch --wait --quiet --array=0-3 --cpus-per-task=1 \
        "$here/scripts/slurm-array.sh" --concurrency 4) ||
        fail "sbatch --wait of the array: exit $? (logs: $dir/run1/scrape-*.log)"
    say "slurm: array of 4 done in $(seconds_since "$t") s"
    verify_complete "$dir/run1/verify.log" "$dir"/run1/shard-{0..3}
    check_manifests 200 4 "$dir"/run1/shard-{0..3}

    # The guide's example: an array of 4 tasks of 2 CPUs (one at a time here), then verify.
    step="slurm: the guide's sh slurm block"
    t=$(date +%s.%N)
    run_guide_block slurm "$dir/guide" 180
    grep -x complete "$dir/guide/block.log" >/dev/null || fail "the guide's sh slurm block: verify did not say complete"
    check_manifests 400 4 "$dir"/guide/out/shard-{0..3}
    say "slurm: the guide's example done in $(seconds_since "$t") s"

    # Run 2: task 1 is cancelled mid-run. One request at a time makes a task take
    # about 3 s (100 batches, 20-40 ms each).
    step="slurm: scancel one array task mid-run"
    mkdir -p "$dir/run2"
    job=$(cd "$dir/run2" && SCRAPE_URL=$template SCRAPE_RANGE=0..4000 OUT_ROOT=$dir/run2 \
        timeout 30 sbatch --parsable --array=0-3 --cpus-per-task=1 \
        "$here/scripts/slurm-array.sh" --concurrency 1)
    job=${job%%;*}
    lines_at_least() { [ -f "$2" ] && [ "$(wc -l <"$2")" -ge "$1" ]; }
    wait_for 60 "array task ${job}_1 to store 10 batches" lines_at_least 10 "$dir/run2/shard-1/manifest.jsonl"
    state=$(squeue -h -j "${job}_1" -o %t)
    [ "$state" = R ] || fail "task ${job}_1 is '$state', not running: it ended before it could be cancelled"
    scancel "${job}_1"
    echo "scancel ${job}_1 after $(wc -l <"$dir/run2/shard-1/manifest.jsonl") of its 100 batches"
    array_done() { [ -z "$(squeue -h -j "$job")" ]; }
    wait_for 120 "array $job to end" array_done
    for k in 0 1 2 3; do
        state=$(scontrol show job "${job}_$k" | tr ' ' '\n' | sed -n 's/^\(JobState\|ExitCode\)=//p' | tr '\n' ' ')
        if [ "$k" = 1 ]; then
            # The coordinator stopped on Slurm's SIGTERM, before SIGKILL, and then died
            # by that SIGTERM itself, as it does to tell its caller (a shell sees 143).
            [ "$state" = "CANCELLED 0:15 " ] || fail "task ${job}_1 is $state, expected CANCELLED 0:15"
        else
            [ "$state" = "COMPLETED 0:0 " ] || fail "task ${job}_$k is $state, expected COMPLETED 0:0"
        fi
    done
    echo "task ${job}_1: CANCELLED, by SIGTERM (143 to a shell); its log says:"
    grep -E '^(warning|stopped)' "$dir/run2/scrape-${job}_1.log" | sed 's/^/    /' || true
    resume_command_for 1/4 "$dir/run2/verify-cut.log" "$dir"/run2/shard-{0..3}

    # A task re-submitted alone (--array=1) sees SLURM_ARRAY_TASK_COUNT=1: its shard
    # would be 0/1, which --resume refuses (exit 2) against shard-0's run.json (0/4).
    step="slurm: a lone --array=1 is refused"
    (cd "$dir/run2" && SCRAPE_URL=$template SCRAPE_RANGE=0..4000 OUT_ROOT=$dir/run2 \
        timeout 60 sbatch --wait --quiet --array=1 --cpus-per-task=1 --output=alone-%A_%a.log \
        "$here/scripts/slurm-array.sh") && fail "a lone --array=1 task was not refused"
    grep -q "holds a run of another plan" "$dir"/run2/alone-*.log ||
        fail "the lone --array=1 task failed for another reason: $(cat "$dir"/run2/alone-*.log)"
    echo "a lone --array=1 re-submission: refused, as its shard reads 0/1"

    step="slurm: re-submit the printed --resume command"
    (cd "$dir/run2" && timeout 120 sbatch --wait --quiet --cpus-per-task=1 \
        --output=resume-%j.log --wrap "$resume_cmd") ||
        fail "the re-submitted --resume job failed: $(cat "$dir"/run2/resume-*.log)"
    grep -q "^done: $gaps batches ok, 0 failed" "$dir"/run2/resume-*.log ||
        fail "the --resume job did not fetch exactly the $gaps gaps: $(grep '^done:' "$dir"/run2/resume-*.log)"
    echo "the --resume job fetched exactly the $gaps missing batches"
    verify_complete "$dir/run2/verify.log" "$dir"/run2/shard-{0..3}
    check_manifests 400 4 "$dir"/run2/shard-{0..3}
}

# --- ssh ---------------------------------------------------------------------------
run_ssh() {
    step="ssh: start sshd"
    local dir=$work/ssh ports=() k pid
    mkdir -p "$dir"
    chmod 700 "$dir"
    ssh-keygen -q -t ed25519 -N '' -C test-cluster-host -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -C test-cluster-client -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    local port
    while [ "${#ports[@]}" -lt 3 ]; do
        port=$(free_port)
        [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
    done
    {
        for k in 0 1 2; do echo "ListenAddress 127.0.0.1:${ports[k]}"; done
        cat <<EOF
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
SetEnv PATH=$work/bin:/usr/local/bin:/usr/bin:/bin TEST_CLUSTER_RUN=$work
LogLevel VERBOSE
EOF
    } >"$dir/sshd_config"
    {
        for k in 0 1 2; do printf 'Host node%d\n  Port %s\n' $((k + 1)) "${ports[k]}"; done
        cat <<EOF
Host *
  HostName 127.0.0.1
  User root
  IdentityFile $dir/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
EOF
    } >"$dir/ssh_config"
    for k in 0 1 2; do
        echo "[127.0.0.1]:${ports[k]} $(cut -d' ' -f1,2 "$dir/host_key.pub")"
    done >"$dir/known_hosts"
    if [ ! -d /run/sshd ]; then
        mkdir -m 755 /run/sshd
        made_privsep=1
    fi
    /usr/sbin/sshd -t -f "$dir/sshd_config" || fail "sshd -t: the generated sshd_config is refused"
    /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
    pid=$!
    daemons+=("sshd $pid")
    listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }
    for k in 0 1 2; do
        wait_for 10 "sshd on port ${ports[k]}" listening "${ports[k]}"
    done
    for k in 1 2 3; do
        [ "$(timeout 20 ssh -F "$dir/ssh_config" "node$k" 'command -v coordinator')" = "$work/bin/coordinator" ] ||
            fail "node$k: \`coordinator\` on an ssh session's PATH is not $work/bin/coordinator"
    done
    say "ssh: sshd (pid $pid) on 127.0.0.1 ports ${ports[*]} as node1 node2 node3"

    [ -n "$template" ] || start_local_server
    export PARALLEL_SSH="ssh -F $dir/ssh_config" PARALLEL_HOME=$dir/parallel
    mkdir -p "$PARALLEL_HOME"
    touch "$PARALLEL_HOME/will-cite"
    # parallel-ssh.sh over the three hosts, to exit 0, no command printed for gaps and
    # verify saying complete; its output in $dir/NAME.out and .log.
    parallel_ssh() {
        HOSTS=node1,node2,node3 OUT_ROOT=$dir/out timeout 120 "$here/scripts/parallel-ssh.sh" \
            "$template" 0..3000 --concurrency 4 >"$dir/$1.out" 2>"$dir/$1.log" ||
            fail "parallel-ssh.sh ($1): exit $?: $(cat "$dir/$1.log")"
        [ ! -s "$dir/$1.out" ] || fail "parallel-ssh.sh printed commands for gaps: $(cat "$dir/$1.out")"
        grep -x complete "$dir/$1.log" >/dev/null || fail "parallel-ssh.sh's verify did not say complete ($1)"
    }
    step="ssh: scripts/parallel-ssh.sh over node1,node2,node3"
    local t
    t=$(date +%s.%N)
    parallel_ssh run1
    say "ssh: 3 shards done in $(seconds_since "$t") s"
    local hosts
    hosts=$(awk -F'\t' 'NR > 1 && $7 == 0 { print $2 }' "$dir/out/parallel.log" | sort | tr '\n' ' ')
    [ "$hosts" = "node1 node2 node3 " ] || fail "the job log's hosts with exit 0 are '$hosts', expected node1 node2 node3"
    [ "$(grep -c 'Accepted publickey' "$dir/sshd.log")" -ge 6 ] || fail "sshd accepted fewer logins than the runs need"
    echo "job log: one shard on each of $hosts(exit 0), through sshd"
    check_manifests 300 3 "$dir"/out/shard-{0..2}

    # The guide's example, over the same three hosts, into a directory of its own.
    step="ssh: the guide's sh ssh block"
    run_guide_block ssh "$dir/guide" 120
    grep -x complete "$dir/guide/block.log" >/dev/null || fail "the guide's sh ssh block: verify did not say complete"
    check_manifests 300 3 "$dir"/guide/out/shard-{0..2}

    # Again, after shard 2 lost a file: every shard has its run.json, so each remote
    # command takes the --resume branch and only the lost file is fetched.
    step="ssh: parallel-ssh.sh again, resuming"
    local lost
    lost=$(jq -r 'select(.file) | .file' "$dir/out/shard-2/manifest.jsonl" | sed -n 5p)
    rm -- "$dir/out/shard-2/$lost"
    parallel_ssh run2
    [ -f "$dir/out/shard-2/$lost" ] || fail "$lost was not fetched again"
    # Without --resume a second run into a shard's directory is refused (exit 2).
    [ "$(awk -F'\t' 'NR > 1 && $7 == 0' "$dir/out/parallel.log" | wc -l)" = 3 ] ||
        fail "the second pass's job log does not show 3 shards with exit 0"
    echo "second pass: $lost fetched again, every shard resumed, verify: complete"
    check_manifests 300 3 "$dir"/out/shard-{0..2}

    # Pages that answer 404: each shard fails (exit 1) and is retried on another host,
    # where --resume finds nothing left to fetch (failed batches count as finished)
    # and exits 0; the final verify finds the failed batches (exit 1) and prints a
    # --retry-failed command for each shard.
    step="ssh: parallel-ssh.sh with failing pages"
    local status=0
    HOSTS=node1,node2,node3 OUT_ROOT=$dir/out404 timeout 120 "$here/scripts/parallel-ssh.sh" \
        "$base/nothing/?start={start}&limit={limit}" 0..30 >"$dir/run404.out" 2>"$dir/run404.log" || status=$?
    [ "$status" = 1 ] || fail "parallel-ssh.sh over 404 pages: exit $status, expected 1: $(cat "$dir/run404.log")"
    [ "$(grep -c -- ' --retry-failed$' "$dir/run404.out")" = 3 ] ||
        fail "expected 3 --retry-failed commands: $(cat "$dir/run404.out")"
    echo "404 pages: exit 1, verify printed a --retry-failed command for each of the 3 shards"
}

# --- network namespaces ------------------------------------------------------------
run_netns() {
    step="netns: make namespaces"
    local dir=$work/netns srv k ns
    local tag=tc$$
    mkdir -p "$dir"
    srv=$tag-server
    ip netns add "$srv" || fail "cannot make a network namespace here (ip netns add): this step cannot run"
    namespaces+=("$srv")
    ip -n "$srv" link set lo up
    ip -n "$srv" link add br0 type bridge
    ip -n "$srv" addr add 198.18.0.1/24 dev br0
    ip -n "$srv" link set br0 up
    for k in 1 2 3; do
        ns=$tag-m$k
        ip netns add "$ns"
        namespaces+=("$ns")
        # Both ends made inside the namespaces: nothing appears in this one.
        ip link add eth0 netns "$ns" type veth peer name m$k netns "$srv"
        ip -n "$srv" link set "m$k" master br0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "198.18.0.1$k/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    say "netns: $srv (198.18.0.1 on br0) and $tag-m1..3 (198.18.0.11-13), one veth pair each"

    step="netns: coordinator serve in $srv"
    ip netns exec "$srv" coordinator serve --addr 198.18.0.1:8080 --delay 20..40 \
        >"$dir/serve.addr" 2>"$dir/serve.log" &
    daemons+=("serve-ns $!")
    wait_for 10 "the server in $srv" test -s "$dir/serve.addr"
    local url="http://198.18.0.1:8080/api/tickers/?start={start}&limit={limit}"
    local range=0..30000 n=3000 pids=() m2_children t0

    # One shard per machine. Each runs in a subshell that records its exit code and
    # end time; its pid file holds the coordinator's own pid (ip netns exec execs it).
    step="netns: one shard per machine"
    local flags=(--url "$url" --range "$range" --workers 1 --concurrency 16)
    t0=$(date +%s.%N)
    for k in 1 2 3; do
        (
            date +%s.%N >"$dir/m$k.start"
            ip netns exec "$tag-m$k" coordinator "${flags[@]}" --shard "$((k - 1))/3" \
                --out "$dir/shard-$((k - 1))" 2>"$dir/m$k.log" &
            echo $! >"$dir/m$k.pid"
            status=0
            wait $! || status=$?
            date +%s.%N >"$dir/m$k.end"
            echo "$status" >"$dir/m$k.rc"
        ) 2>"$dir/m$k.wrapper.log" &
        daemons+=("m$k-wrapper $!")
    done
    for k in 1 2 3; do
        wait_for 10 "machine m$k's coordinator" test -s "$dir/m$k.pid"
        pids[k]=$(cat "$dir/m$k.pid")
        daemons+=("m$k-coordinator ${pids[k]}")
    done

    step="netns: SIGKILL machine m2's coordinator mid-run"
    m2_mid_run() {
        [ ! -s "$dir/m2.rc" ] || fail "m2 ended (exit $(cat "$dir/m2.rc")) before it could be killed: $(cat "$dir/m2.log")"
        [ -f "$dir/shard-1/manifest.jsonl" ] && [ "$(wc -l <"$dir/shard-1/manifest.jsonl")" -ge 250 ]
    }
    wait_for 60 "m2 to store 250 batches" m2_mid_run
    m2_children=$(ps -o pid= --ppid "${pids[2]}" | xargs)
    kill -KILL "${pids[2]}" 2>/dev/null || fail "m2's coordinator ended before it could be killed"
    echo "m2: SIGKILL after $(wc -l <"$dir/shard-1/manifest.jsonl") of its 1000 batches (its workers: $m2_children)"
    ended() { [ -s "$dir/$1.rc" ]; }
    for k in 1 2 3; do
        wait_for 120 "machine m$k to end" ended "m$k"
    done
    [ "$(cat "$dir/m2.rc")" = 137 ] || fail "m2 exited $(cat "$dir/m2.rc"), expected 137 (SIGKILL)"
    for k in 1 3; do
        [ "$(cat "$dir/m$k.rc")" = 0 ] || fail "m$k exited $(cat "$dir/m$k.rc"): $(cat "$dir/m$k.log")"
    done
    workers_gone() {
        local p
        for p in $m2_children; do
            kill -0 "$p" 2>/dev/null && return 1
        done
        return 0
    }
    wait_for 15 "m2's workers to leave after their coordinator was killed" workers_gone

    # Before the resume: what m2 stored, and files that landed after its last
    # manifest flush (they have no line, so they are fetched again).
    local m2_lines m2_files unlisted
    m2_lines=$(jq -R 'fromjson? | select(.file)' "$dir/shard-1/manifest.jsonl" | jq -s length)
    m2_files=$(find "$dir/shard-1" -maxdepth 1 -type f -name 'batch*' | wc -l)
    unlisted=$((m2_files - m2_lines))
    resume_command_for 1/3 "$dir/verify-cut.log" "$dir"/shard-{0..2}

    # With the first run's --workers and --concurrency (flags outside the plan), so
    # that its pages/s compare.
    step="netns: the printed --resume command, run on machine m2"
    local r0 r1
    r0=$(date +%s.%N)
    ip netns exec "$tag-m2" timeout 120 sh -c "$resume_cmd --workers 1 --concurrency 16" 2>"$dir/m2-resume.log" ||
        fail "the --resume run on m2: exit $?: $(cat "$dir/m2-resume.log")"
    r1=$(date +%s.%N)
    grep -q "^done: $gaps batches ok, 0 failed" "$dir/m2-resume.log" ||
        fail "the --resume run did not fetch exactly the $gaps gaps: $(grep '^done:' "$dir/m2-resume.log")"
    echo "m2 --resume: fetched exactly the $gaps batches with no manifest line" \
        "($unlisted of them had a file, written after the last manifest flush)"
    verify_complete "$dir/verify.log" "$dir"/shard-{0..2}
    grep -q '^duplicates: 0$' "$dir/verify.log" || fail "verify found duplicates"
    check_manifests "$n" 3 "$dir"/shard-{0..2}

    # Pages/s: batches stored per wall-clock second of each machine's coordinator runs
    # (m2's SIGKILLed run counts the batches its manifest kept).
    local s e pages how
    row() { awk -v m="$1" -v a="$2" -v sh="$3" -v how="$4" -v p="$5" -v s="$6" -v e="$7" \
        'BEGIN { printf "%-7s %-12s %-5s %-24s %6d %8.2f %8.1f\n", m, a, sh, how, p, e - s, p / (e - s) }'; }
    printf '%-7s %-12s %-5s %-24s %6s %8s %8s\n' machine address shard run pages seconds pages/s
    for k in 1 2 3; do
        s=$(cat "$dir/m$k.start")
        e=$(cat "$dir/m$k.end")
        if [ "$k" = 2 ]; then
            pages=$m2_lines how="until SIGKILL"
        else
            pages=$(jq -s length "$dir/shard-$((k - 1))/manifest.jsonl") how="whole shard"
        fi
        row "m$k" "198.18.0.1$k" "$((k - 1))/3" "$how" "$pages" "$s" "$e"
    done
    row m2 198.18.0.12 1/3 "--resume, alone" "$gaps" "$r0" "$r1"
    row total "" "" "first start to last end" "$n" "$t0" "$r1"
}

if wants slurm; then
    run_slurm
fi
if wants ssh; then
    run_ssh
fi
if wants netns; then
    run_netns
fi
step="cleanup"
echo "Kubernetes: not run here (no cluster); the Indexed Job's pod command runs in tests/shards.rs"

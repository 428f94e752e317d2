#!/usr/bin/env python3
"""Measures one command: wall time, CPU time and memory, as one JSON line on stdout.

    rusage.py [--sample-rss] [--stdout FILE] -- CMD ARGS...

scripts/bench.sh wraps every measured run in it (`measure`: --sample-rss --stdout OUT)
and merges the JSON into the run's row of results.jsonl; the tool's own report (its
--json summary, wrk's text, ...) goes to OUT, where bench.sh reads it.

CMD's stdout goes to --stdout FILE (default /dev/null), so it never mixes with the
JSON; CMD's stderr and stdin are inherited. The JSON object:

  wall_s              from just before the spawn to the moment CMD exits (exit is seen
                      at once through a pidfd, not at the next sample)
  user_s, sys_s       getrusage(RUSAGE_CHILDREN) after minus before: CMD and every
  cpu_s               descendant that was waited for (by CMD, or by this script: it is
                      a child subreaper, so orphaned descendants are re-parented to it
                      and reaped here if they have exited by the time CMD has)
  max_rss_kib_single  ru_maxrss of RUSAGE_CHILDREN: the largest single process among
                      those, in KiB; not a sum over processes. It has a FLOOR: Linux
                      carries the RSS of the forking process into ru_maxrss at exec,
                      so CMD reads at least this script's own RSS (~14 MB) even for
                      `sleep` (GNU time says ~1.5 MB there). Its descendants forked
                      by a small CMD are not affected. Prefer peak_rss_kib_tree
  rss_floor_kib       that floor: this script's own peak RSS when CMD was spawned
  peak_rss_kib_tree   with --sample-rss only (else null): the peak over samples taken
                      every 50 ms of the SUM of VmRSS of CMD and all its live
                      descendants, read from /proc (task/*/children, status). Memory
                      shared between processes is counted once per process, and a peak
                      shorter than 50 ms can be missed
  samples             number of RSS samples taken (0 without --sample-rss)
  exit_code           CMD's exit code, or 128+N when it was killed by signal N

The exit code of this script is CMD's (128+N when a signal N ended it), so that a
failed run cannot pass for a measurement; the JSON is printed either way. 127 when CMD
cannot be started, 2 on a usage error.
While CMD runs, SIGINT and SIGQUIT are ignored here (as time(1) does; the terminal
sends them to CMD too), and SIGTERM/SIGHUP are passed on to CMD.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time

SAMPLE_INTERVAL = 0.05
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux or no prctl: orphans go to init and are not counted


def children_of(pid: int) -> list[int]:
    """Children of every thread of pid (a child belongs to the thread that forked it)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass  # the thread or the process is gone
    return kids


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone, or a zombie (no VmRSS line)


def tree_rss_kib(root: int) -> int:
    total, seen, stack = 0, set(), [root]
    while stack:
        pid = stack.pop()
        if pid in seen:  # a pid reused mid-walk; never count twice
            continue
        seen.add(pid)
        total += rss_kib(pid)
        stack.extend(children_of(pid))
    return total


def wait_for_exit(proc: subprocess.Popen, on_tick) -> int:
    """Calls on_tick() right away and then every SAMPLE_INTERVAL until proc exits;
    returns the raw wait status. Does not reap before the exit is seen."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tick:
                on_tick()
                next_tick = max(next_tick + SAMPLE_INTERVAL, now)
            timeout = max(0.0, next_tick - time.monotonic())
            if pidfd is not None:
                try:
                    ready, _, _ = select.select([pidfd], [], [], timeout)
                except InterruptedError:
                    continue
                if not ready:
                    continue
                _, status = os.waitpid(proc.pid, 0)
                return status
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                return status
            time.sleep(min(timeout, 0.005))  # no pidfd: poll at 5 ms
    finally:
        if pidfd is not None:
            os.close(pidfd)


def reap_exited_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample-rss", action="store_true",
                    help="sample the summed VmRSS of the process tree every 50 ms")
    ap.add_argument("--stdout", default=os.devnull, metavar="FILE",
                    help="where CMD's stdout goes (default /dev/null)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given (rusage.py [options] -- CMD ARGS...)")

    become_subreaper()
    peak = 0
    samples = 0
    with open(a.stdout, "wb") as out:
        floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=out)
        except OSError as e:
            print(f"rusage.py: cannot run {cmd[0]}: {e}", file=sys.stderr)
            return 127
        for sig in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        reaped = False

        def forward(signum, _frame) -> None:
            # os.kill, not proc.send_signal: that would poll() and could reap CMD
            # before wait_for_exit does, losing its status.
            if not reaped:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:
                    pass

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)

        def sample() -> None:
            nonlocal peak, samples
            if a.sample_rss:
                peak = max(peak, tree_rss_kib(proc.pid))
                samples += 1

        status = wait_for_exit(proc, sample)
        wall = time.perf_counter() - t0
        reaped = True
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        reap_exited_orphans()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)

    code = proc.returncode
    exit_code = 128 - code if code < 0 else code
    user = after.ru_utime - before.ru_utime
    sys_ = after.ru_stime - before.ru_stime
    print(json.dumps({
        "wall_s": round(wall, 4),
        "user_s": round(user, 4),
        "sys_s": round(sys_, 4),
        "cpu_s": round(user + sys_, 4),
        "max_rss_kib_single": after.ru_maxrss,
        "rss_floor_kib": floor,
        "peak_rss_kib_tree": peak if a.sample_rss else None,
        "samples": samples,
        "exit_code": exit_code,
    }), flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

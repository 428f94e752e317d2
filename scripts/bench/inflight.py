#!/usr/bin/env python3
"""The seed article's 10,000-concurrent-jobs experiment, with real HTTP requests.

The seed article runs 10,000 asyncio jobs of 2-4 s each (asyncio.sleep) on one event
loop and finishes in ~4.1 s. Here each job is a real request to `coordinator serve
--delay 2000..4000`, which answers each request after 2-4 s, so all requests are in
flight at once:

    inflight.py --url 'http://127.0.0.1:PORT/api/tickers/?start={start}&limit=10' --count 10000

scripts/bench.sh runs it under scripts/bench/rusage.py --sample-rss as the Python peer
of `coordinator --concurrency 5000 ...` for wall time and peak memory with 10,000
requests in flight, and reads "ok" from the JSON object printed on stdout:
{"count", "ok", "failed", "wall_s"}.

How it works: it first raises its RLIMIT_NOFILE soft limit to the hard limit (one
socket per request), then opens one aiohttp.ClientSession with TCPConnector(limit=0)
(no connection limit), creates all --count tasks at once (URL i has start = 10*i; the
URL may use {start}, {end}, {limit}, {index}), and awaits them all. Each task reads
the whole body; a 2xx response counts as ok. With --out DIR each 2xx body is also
written to DIR/batch{start}-{end}.json, on the event loop as peer_asyncio.py does (the
coordinator writes its files too, and bench.sh checks the files against the server's
pages); without it nothing is written. wall_s runs from creating the session to the
last task finishing.
Exit code: 0 when every request was ok, 1 otherwise, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import sys
import time

import aiohttp

from peer_args import check_template
from peer_args import loop_factory as peer_loop_factory


def raise_nofile_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def fetch(session: aiohttp.ClientSession, url: str, path: str | None) -> str | None:
    """Returns None when the request was ok, else a short error. A 2xx body goes to
    `path` when one is given."""
    try:
        async with session.get(url) as resp:
            body = await resp.read()
            if 200 <= resp.status < 300:
                if path is not None:
                    with open(path, "wb") as f:
                        f.write(body)
                return None
            return f"HTTP {resp.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


async def run(template: str, count: int, timeout: float,
              out: str | None) -> tuple[list[str | None], float]:
    connector = aiohttp.TCPConnector(limit=0)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        tasks = [asyncio.create_task(fetch(
                     session,
                     template.format(start=10 * i, end=10 * i + 10, limit=10, index=i),
                     None if out is None else os.path.join(out, f"batch{10 * i}-{10 * i + 10}.json")))
                 for i in range(count)]
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return results, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="URL with {start} (and/or {end}, {limit}, {index})")
    ap.add_argument("--count", type=int, default=10_000, help="requests, all in flight at once (default 10000)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop (must be installed)")
    ap.add_argument("--out", metavar="DIR", help="write each 2xx body to DIR/batch{start}-{end}.json")
    a = ap.parse_args()
    if a.count < 1:
        ap.error("--count: must be at least 1")
    check_template(ap, "--url", a.url)
    if a.out is not None:
        os.makedirs(a.out, exist_ok=True)
    loop_factory = peer_loop_factory(ap, a.uvloop)

    soft, _ = raise_nofile_limit()
    if soft != resource.RLIM_INFINITY and soft < a.count + 64:
        print(f"inflight: RLIMIT_NOFILE is {soft}, below --count {a.count}; expect failures",
              file=sys.stderr)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results, wall = runner.run(run(a.url, a.count, a.timeout, a.out))

    errors = collections.Counter(r for r in results if r is not None)
    for error, n in errors.most_common(5):
        print(f"inflight: {n} x {error}", file=sys.stderr)
    failed = sum(errors.values())
    print(json.dumps({"count": a.count, "ok": a.count - failed, "failed": failed, "wall_s": round(wall, 4)}))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

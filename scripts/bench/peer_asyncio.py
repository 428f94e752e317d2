#!/usr/bin/env python3
"""The scrape-mode peer: the seed article's job done well in Python asyncio + aiohttp.

The seed article fetches a paged tickers API in batches of 10 coins and stores each
batch as batch{start}-{end}.json. This script does the same job the way a careful
Python programmer would, so that scripts/bench.sh can compare `coordinator` with a
fair, strong Python peer in the same run:

    peer_asyncio.py --url-template 'http://127.0.0.1:PORT/api/tickers/?start={start}&limit={limit}' \\
                    --range 0..100000 --batch 10 --concurrency 256 --out DIR

bench.sh runs it under scripts/bench/rusage.py (which supplies wall time, CPU and RSS)
and reads "ok" from the JSON object this script prints on stdout.

How it works:
- one aiohttp.ClientSession whose connector keeps up to --concurrency keep-alive
  connections; for https:// URLs, --cacert FILE gives it an ssl.SSLContext that trusts
  exactly the CAs in FILE (ssl.create_default_context(cafile=FILE): certificate and
  host name verified), else Python's default context over the system's store;
- batches come from a generator; a task is created for a batch only after a slot of
  an asyncio.Semaphore(--concurrency) is acquired, so at most --concurrency requests
  (and tasks) exist at once, whatever the size of the range;
- each 2xx body is written to DIR/batch{start}-{end}.json directly ON THE EVENT LOOP
  (a plain blocking write of a few KiB into the page cache, ~10-20 us). With
  --threaded-writes, the write goes through asyncio.to_thread instead; on a small
  machine that is slower (a thread hop per file), so it is not the default;
- DIR/manifest.jsonl gets one JSON line per batch, in the order batches finish:
  index, start, end, url, status (null when no response), bytes, elapsed_ms, and
  "file" when stored or "error" when not (a non-2xx body is not stored), like the
  coordinator's manifest. No retries are made (the target is healthy loopback).

At the end it prints {"pages", "ok", "failed", "wall_s", "pages_per_s"} on stdout;
wall_s runs from creating the session to the manifest being closed (interpreter
start-up and imports are not included; rusage.py's wall_s includes them).
Exit code: 0 when every batch was stored, 1 when some failed, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import ssl
import sys
import time

import aiohttp

from peer_args import check_template
from peer_args import loop_factory as peer_loop_factory


def parse_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("..", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START..END, got {text!r}") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 0 <= START <= END, got {text!r}")
    return lo, hi


def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def batches(lo: int, hi: int, size: int):
    """Yields (index, start, end) lazily; the last batch may be shorter."""
    for index, start in enumerate(range(lo, hi, size)):
        yield index, start, min(start + size, hi)


def write_file(path: str, body: bytes) -> None:
    with open(path, "wb") as f:
        f.write(body)


class Scraper:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ok = 0
        self.failed = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.manifest = open(os.path.join(args.out, "manifest.jsonl"), "w", encoding="utf-8")

    async def fetch(self, session: aiohttp.ClientSession, index: int, start: int, end: int) -> None:
        a = self.args
        url = a.url_template.format(start=start, end=end, limit=end - start, index=index)
        name = f"batch{start}-{end}.json"
        line = {"index": index, "start": start, "end": end, "url": url, "status": None, "bytes": 0}
        t0 = time.perf_counter()
        try:
            async with session.get(url) as resp:
                line["status"] = resp.status
                body = await resp.read()
            line["bytes"] = len(body)
            if 200 <= resp.status < 300:
                path = os.path.join(a.out, name)
                try:
                    if a.threaded_writes:
                        await asyncio.to_thread(write_file, path, body)
                    else:
                        write_file(path, body)
                    line["file"] = name
                except OSError as e:
                    line["error"] = f"writing {name}: {e}"
            else:
                line["error"] = f"HTTP {resp.status} {resp.reason}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            line["error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        line["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if "file" in line:
            self.ok += 1
        else:
            self.failed += 1
            self.errors[line["error"]] += 1
        self.manifest.write(json.dumps(line, separators=(",", ":")) + "\n")

    async def run(self) -> None:
        a = self.args
        sem = asyncio.Semaphore(a.concurrency)
        running: set[asyncio.Task] = set()
        crashed: list[BaseException] = []

        def finished(task: asyncio.Task) -> None:
            running.discard(task)
            sem.release()
            if not task.cancelled() and task.exception() is not None:
                crashed.append(task.exception())

        # https:// trusts exactly --cacert when given (as curl's --cacert), else the
        # system's store (aiohttp's default).
        tls = ssl.create_default_context(cafile=a.cacert) if a.cacert else True
        connector = aiohttp.TCPConnector(limit=a.concurrency, ssl=tls)
        timeout = aiohttp.ClientTimeout(total=a.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for index, start, end in batches(*a.range, a.batch):
                await sem.acquire()  # a task exists only once it has a slot
                if crashed:
                    break
                task = asyncio.create_task(self.fetch(session, index, start, end))
                running.add(task)
                task.add_done_callback(finished)
            if running:
                await asyncio.wait(running)
        if crashed:  # a bug, not a failed batch: do not hide it
            raise crashed[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url-template", required=True,
                    help="URL with {start}, {end}, {limit} and/or {index}")
    ap.add_argument("--range", required=True, type=parse_range, metavar="START..END")
    ap.add_argument("--batch", type=positive, default=10, help="items per batch (default 10)")
    ap.add_argument("--concurrency", type=positive, default=256, help="requests in flight (default 256)")
    ap.add_argument("--out", required=True, help="directory for the batch files and manifest.jsonl")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    ap.add_argument("--threaded-writes", action="store_true",
                    help="write files through asyncio.to_thread instead of on the loop")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop (must be installed)")
    ap.add_argument("--cacert", metavar="FILE",
                    help="for https://: trust exactly the CAs in this PEM file (an ssl.SSLContext)")
    a = ap.parse_args()
    check_template(ap, "--url-template", a.url_template)
    loop_factory = peer_loop_factory(ap, a.uvloop)
    os.makedirs(a.out, exist_ok=True)

    scraper = Scraper(a)
    t0 = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scraper.run())
    scraper.manifest.close()
    wall = time.perf_counter() - t0

    pages = scraper.ok + scraper.failed
    for error, n in scraper.errors.most_common(5):
        print(f"peer_asyncio: {n} x {error}", file=sys.stderr)
    print(json.dumps({"pages": pages, "ok": scraper.ok, "failed": scraper.failed,
                      "wall_s": round(wall, 4), "pages_per_s": round(pages / wall, 1) if wall else None}))
    return 0 if scraper.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

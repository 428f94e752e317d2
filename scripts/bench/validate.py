#!/usr/bin/env python3
"""Checks what a benchmark run did, independently of what the tool says about itself.

scripts/bench.sh records a row only together with one of these checks; report.py
takes a row into a figure only when its command exited 0 and the check says valid.

    validate.py reference --base URL --pages N --out REF.json
        Fetches pages 0..N of the tickers API at URL (page i is
        /api/tickers/?start=10i&limit=10), one plain HTTP/1.1 request each, and writes
        the size and sha256 of each body: what a scrape of those pages must store.
        Any status but 200 is an error (exit 1).

    validate.py pages --ref REF.json --dir DIR --pages N --names range|list
        Counts the page files in DIR and compares each one's bytes with the reference.
        `range` names page i batch{10i}-{10i+10}.json (a --range 0..10N --batch 10
        scrape), `list` names it batch{i}-{i+1}.json (line i of a URL list).
        manifest.jsonl and run.json may be there too; any other file (a temp file, an
        error page) makes the run invalid.

    validate.py load --tool wrk|oha|coordinator --report FILE
                     [--server-requests N | --access-log LOG --log-offset B] [--slack S]
                     [--protocol P]
        Reads the tool's own report and checks that every response was a 2xx and that
        no request failed (oha's requests aborted at the end of -z excepted).
        With --server-requests (the count of requests the server itself saw, from
        nginx's stub_status), the tool's count must lie within [N - S, N]. With
        --access-log the server's count is that of the lines of nginx's access log
        written from byte B on, checked as `access-log` does (with --protocol).

    validate.py access-log --log LOG --offset B [--protocol P] [--requests N]
        The lines of nginx's access log written from byte B on, in the format
        bench.sh gives it: `$status $server_protocol $ssl_protocol $ssl_session_reused
        $connection`. Counts the requests, the connections they came on and those of
        them whose TLS session was resumed. Every status must be 200, every request
        of protocol P (HTTP/1.1, HTTP/2.0) when given, and at least N when given.

    validate.py rate --dir DIR --pages N --seconds S
        The scrape --rate run: one-second windows of the manifest's at_ms.

    validate.py throttled --summary FILE --dir DIR --pages N
        A scrape against a server that answers 429 (the adaptive group): the tool's
        --json summary (FILE) against its manifest in DIR. The summary's `requests`
        must be the sum of the manifest's `attempts`, its `ok` the manifest's lines
        with status 200, ok + failed the N batches of the plan. Gives requests, ok,
        failed, throttled (requests - ok: every attempt but the last successful one
        of each batch) and the most attempts one batch took. Failed batches do not
        make it invalid (the pages check counts the files).

Each prints one JSON object on stdout: the figures plus "valid" (true or false) and
"why" (what failed, or null); the exit code is 0 when valid, 1 when not, 2 on a usage
error. `validate.py --self-test` runs the checks on made-up inputs.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import urllib.parse

EXTRA_FILES = {"manifest.jsonl", "run.json"}


def page_name(i: int, names: str) -> str:
    return f"batch{10 * i}-{10 * i + 10}.json" if names == "range" else f"batch{i}-{i + 1}.json"


def fetch_reference(base: str, pages: int, threads: int = 4) -> dict[str, list]:
    """{"<i>": [size, sha256]} for pages 0..pages, fetched over keep-alive connections."""
    url = urllib.parse.urlsplit(base)
    ref: dict[str, list] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            for i in range(k, pages, threads):
                conn.request("GET", f"/api/tickers/?start={10 * i}&limit=10")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    with lock:
                        errors.append(f"page {i}: HTTP {resp.status}")
                    return
                with lock:
                    ref[str(i)] = [len(body), hashlib.sha256(body).hexdigest()]
        except (OSError, http.client.HTTPException) as e:
            with lock:
                errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return ref


def check_pages(ref: dict[str, list], directory: str, pages: int, names: str) -> dict:
    expected = {page_name(i, names): i for i in range(pages)}
    try:
        present = set(os.listdir(directory))
    except OSError as e:
        return {"pages": 0, "files": 0, "valid": False, "why": f"cannot list {directory}: {e}"}
    files = present & expected.keys()
    strays = sorted(present - expected.keys() - EXTRA_FILES)
    matching, wrong = 0, []
    for name in sorted(files):
        i = expected[name]
        if str(i) not in ref:
            wrong.append(f"{name} (no reference)")
            continue
        with open(os.path.join(directory, name), "rb") as f:
            body = f.read()
        size, digest = ref[str(i)]
        if len(body) == size and hashlib.sha256(body).hexdigest() == digest:
            matching += 1
        else:
            wrong.append(name)
    why = []
    if len(files) < pages:
        why.append(f"{pages - len(files)} of {pages} pages have no file")
    if wrong:
        why.append(f"{len(wrong)} files differ from the server's pages (e.g. {wrong[0]})")
    if strays:
        why.append(f"{len(strays)} unexpected files (e.g. {strays[0]})")
    return {"pages": matching, "files": len(files), "valid": not why,
            "why": "; ".join(why) or None}


def load_report(tool: str, text: str) -> tuple[int, list[str]]:
    """(requests with a whole response, problems) from a load tool's own report."""
    problems = []
    if tool == "wrk":
        m = re.search(r"(\d+) requests in", text)
        if not m:
            return 0, ["no request count in wrk's report"]
        requests = int(m.group(1))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            problems.append(f"{m.group(1)} non-2xx/3xx responses")
        m = re.search(r"Socket errors: (.*)", text)
        if m:
            problems.append(f"socket errors: {m.group(1).strip()}")
    elif tool == "oha":
        d = json.loads(text)
        statuses = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
        requests = sum(statuses.values())
        bad = {k: v for k, v in statuses.items() if not 200 <= k < 300}
        if bad:
            problems.append(f"statuses {bad}")
        errors = {k: v for k, v in (d.get("errorDistribution") or {}).items()
                  if k != "aborted due to deadline"}
        if errors:
            problems.append(f"errors {errors}")
    else:
        d = json.loads(text)
        requests = int(d["responses"])
        bad = {k: v for k, v in d["statuses"].items() if not 200 <= int(k) < 300}
        if bad:
            problems.append(f"statuses {bad}")
        errors = {k: v for k, v in d["errors"].items() if v}
        if errors:
            problems.append(f"errors {errors}")
    if requests == 0:
        problems.append("no response at all")
    return requests, problems


def check_load(tool: str, text: str, server_requests: int | None, slack: int) -> dict:
    try:
        requests, problems = load_report(tool, text)
    except (ValueError, KeyError, TypeError) as e:
        return {"requests": 0, "valid": False, "why": f"unreadable report: {type(e).__name__}: {e}"}
    out = {"requests": requests}
    if server_requests is not None:
        out["server_requests"] = server_requests
        if not server_requests - slack <= requests <= server_requests:
            problems.append(f"the tool counted {requests} requests, the server saw {server_requests}")
    out.update(valid=not problems, why="; ".join(problems) or None)
    return out


def read_access_log(path: str, offset: int) -> dict:
    """What nginx logged from byte `offset` on: requests, connections, resumed ones, the
    protocols and TLS versions, and the statuses other than 200."""
    statuses: collections.Counter[str] = collections.Counter()
    protocols: collections.Counter[str] = collections.Counter()
    tls: collections.Counter[str] = collections.Counter()
    connections: set[str] = set()
    resumed: set[str] = set()
    requests, unreadable = 0, None
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            fields = raw.decode("ascii", "replace").split()
            if len(fields) != 5:
                unreadable = unreadable or f"unreadable lines (e.g. {raw[:60]!r})"
                statuses[unreadable] += 1
                continue
            status, protocol, version, reused, connection = fields
            requests += 1
            statuses[status] += 1
            protocols[protocol] += 1
            tls[version] += 1
            connections.add(connection)
            if reused == "r":
                resumed.add(connection)
    return {"server_requests": requests, "connections": len(connections),
            "resumed_connections": len(resumed), "protocols": dict(protocols),
            "tls_versions": dict(tls), "bad_statuses": {k: v for k, v in statuses.items() if k != "200"}}


def check_access_log(path: str, offset: int, protocol: str | None, requests: int | None) -> dict:
    try:
        out = read_access_log(path, offset)
    except OSError as e:
        return {"server_requests": 0, "valid": False, "why": f"cannot read {path}: {e}"}
    why = []
    if out["bad_statuses"]:
        why.append(f"nginx logged statuses {out['bad_statuses']}")
    other = {k: v for k, v in out["protocols"].items() if protocol is not None and k != protocol}
    if other:
        why.append(f"nginx logged {other} requests, not {protocol}")
    if requests is not None and out["server_requests"] < requests:
        why.append(f"nginx logged {out['server_requests']} requests for {requests} pages")
    if out["server_requests"] == 0:
        why.append("nginx logged no request")
    del out["bad_statuses"]
    out.update(valid=not why, why="; ".join(why) or None)
    return out


def check_rate(directory: str, pages: int, seconds: int) -> dict:
    try:
        at = [json.loads(line)["at_ms"] for line in open(os.path.join(directory, "manifest.jsonl"))]
    except (OSError, ValueError, KeyError) as e:
        return {"requests": 0, "valid": False, "why": f"unreadable manifest: {e}"}
    if not at:
        return {"requests": 0, "valid": False, "why": "empty manifest"}
    t0 = min(at)
    per = collections.Counter((a - t0) // 1000 for a in at)
    full = [per[s] for s in range(seconds)]
    return {"requests": len(at), "span_s": (max(at) - t0) / 1000, "max_window": max(full),
            "min_window": min(full), "valid": len(at) == pages,
            "why": None if len(at) == pages else f"{len(at)} manifest lines for {pages} pages"}


def check_throttled(summary_text: str, directory: str, pages: int) -> dict:
    try:
        summary = json.loads(summary_text)
        requests, ok, failed = int(summary["requests"]), int(summary["ok"]), int(summary["failed"])
    except (ValueError, KeyError, TypeError) as e:
        return {"requests": 0, "valid": False, "why": f"unreadable summary: {type(e).__name__}: {e}"}
    try:
        lines = [json.loads(line) for line in open(os.path.join(directory, "manifest.jsonl"))]
        attempts = [int(x["attempts"]) for x in lines]
        ok_lines = sum(1 for x in lines if x.get("status") == 200)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"requests": requests, "valid": False, "why": f"unreadable manifest: {type(e).__name__}: {e}"}
    why = []
    if sum(attempts) != requests:
        why.append(f"the summary counts {requests} requests, the manifest {sum(attempts)} attempts")
    if ok_lines != ok:
        why.append(f"the summary counts {ok} ok batches, the manifest {ok_lines} with status 200")
    if ok + failed != pages:
        why.append(f"{ok} ok and {failed} failed batches for {pages}")
    return {"requests": requests, "ok": ok, "failed": failed, "throttled": requests - ok,
            "max_attempts": max(attempts, default=0), "valid": not why, "why": "; ".join(why) or None}


def self_test() -> int:
    failures = []

    def expect(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    bodies = [f'{{"page": {i}}}'.encode() for i in range(3)]
    ref = {str(i): [len(b), hashlib.sha256(b).hexdigest()] for i, b in enumerate(bodies)}
    with tempfile.TemporaryDirectory() as d:
        for i, b in enumerate(bodies):
            with open(os.path.join(d, page_name(i, "range")), "wb") as f:
                f.write(b)
        open(os.path.join(d, "manifest.jsonl"), "w").close()
        r = check_pages(ref, d, 3, "range")
        expect("whole run", (r["valid"], r["pages"]), (True, 3))
        expect("names of a list", check_pages(ref, d, 3, "list")["valid"], False)
        with open(os.path.join(d, page_name(1, "range")), "wb") as f:
            f.write(b'{"page": 9}')
        r = check_pages(ref, d, 3, "range")
        expect("a changed page", (r["valid"], r["pages"]), (False, 2))
        os.remove(os.path.join(d, page_name(1, "range")))
        r = check_pages(ref, d, 3, "range")
        expect("a missing page", (r["valid"], r["pages"], r["files"]), (False, 2, 2))
        with open(os.path.join(d, page_name(1, "range")), "wb") as f:
            f.write(bodies[1])
        open(os.path.join(d, ".batch10-20.json.77.part"), "w").close()
        expect("a temp file", check_pages(ref, d, 3, "range")["valid"], False)

    wrk_ok = "  Thread Stats ...\n  1000 requests in 1.00s, 1.00MB read\nRequests/sec: 1000\n"
    expect("wrk", check_load("wrk", wrk_ok, 1010, 50), {
        "requests": 1000, "server_requests": 1010, "valid": True, "why": None})
    expect("wrk non-2xx", check_load("wrk", wrk_ok + "  Non-2xx or 3xx responses: 3\n", None, 0)["valid"], False)
    expect("wrk errors", check_load("wrk", wrk_ok + "  Socket errors: connect 0, read 2, write 0, timeout 0\n",
                                    None, 0)["valid"], False)
    expect("wrk vs server", check_load("wrk", wrk_ok, 900, 50)["valid"], False)
    expect("wrk far under server", check_load("wrk", wrk_ok, 1200, 50)["valid"], False)
    oha = {"statusCodeDistribution": {"200": 500}, "errorDistribution": {"aborted due to deadline": 20}}
    expect("oha", check_load("oha", json.dumps(oha), None, 0)["valid"], True)
    oha["errorDistribution"]["connection refused"] = 1
    expect("oha errors", check_load("oha", json.dumps(oha), None, 0)["valid"], False)
    ours = {"responses": 10, "statuses": {"200": 9, "503": 1}, "errors": {"connect": 0}}
    expect("ours 503", check_load("coordinator", json.dumps(ours), None, 0)["valid"], False)
    ours = {"responses": 10, "statuses": {"200": 10}, "errors": {"connect": 0, "read": 0}}
    expect("ours", check_load("coordinator", json.dumps(ours), 10, 0)["valid"], True)
    expect("ours unreadable", check_load("coordinator", "error: ...", None, 0)["valid"], False)

    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "access.log")
        with open(log, "w") as f:
            f.write("200 HTTP/1.1 TLSv1.3 . 1\n")  # before the offset
            offset = f.tell()
            f.write("200 HTTP/2.0 TLSv1.3 . 2\n200 HTTP/2.0 TLSv1.3 . 2\n200 HTTP/2.0 TLSv1.3 r 3\n")
        r = check_access_log(log, offset, "HTTP/2.0", 3)
        expect("access log", (r["valid"], r["server_requests"], r["connections"], r["resumed_connections"]),
               (True, 3, 2, 1))
        expect("access log, another protocol", check_access_log(log, offset, "HTTP/1.1", None)["valid"], False)
        expect("access log, too few", check_access_log(log, offset, None, 4)["valid"], False)
        expect("access log, from the start", check_access_log(log, 0, "HTTP/2.0", None)["valid"], False)
        r = check_load("wrk", wrk_ok.replace("1000 requests", "3 requests"), r["server_requests"], 0)
        expect("load against the log's count", r["valid"], True)
        with open(log, "a") as f:
            f.write("200 HTTP/2.0 TLSv1.3 . 4 1\n")
        r = check_access_log(log, offset, None, None)
        expect("access log, a line of another format", (r["valid"], r["server_requests"]), (False, 3))
        with open(log, "a") as f:
            f.write("404 HTTP/2.0 TLSv1.3 . 4\n")
        expect("access log, a 404", check_access_log(log, offset, None, None)["valid"], False)

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "manifest.jsonl"), "w") as f:
            for k in range(40):
                f.write(json.dumps({"at_ms": 1_000_000 + k * 50}) + "\n")
        r = check_rate(d, 40, 2)
        expect("rate", (r["valid"], r["max_window"], r["min_window"]), (True, 20, 20))
        expect("rate short", check_rate(d, 41, 2)["valid"], False)

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "manifest.jsonl"), "w") as f:
            for k, (status, attempts) in enumerate([(200, 1), (200, 3), (429, 4)]):
                f.write(json.dumps({"index": k, "status": status, "attempts": attempts}) + "\n")
        summary = {"requests": 8, "ok": 2, "failed": 1}
        r = check_throttled(json.dumps(summary), d, 3)
        expect("throttled", (r["valid"], r["throttled"], r["max_attempts"]), (True, 6, 4))
        expect("throttled, requests off", check_throttled(json.dumps({**summary, "requests": 9}), d, 3)["valid"], False)
        expect("throttled, ok off", check_throttled(json.dumps({**summary, "ok": 3, "failed": 0}), d, 3)["valid"], False)
        expect("throttled, a batch missing", check_throttled(json.dumps(summary), d, 4)["valid"], False)
        expect("throttled, no summary", check_throttled("error: ...", d, 3)["valid"], False)

    for f in failures:
        print(f"validate.py self-test: {f}", file=sys.stderr)
    print(f"validate.py self-test: {'FAILED' if failures else 'ok'}", file=sys.stderr)
    return 1 if failures else 0


def read_or_empty(path: str) -> str:
    """The text of `path`, or nothing (said on stderr) when it cannot be read: the check
    then fails on its own terms."""
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        print(f"validate.py: {e}", file=sys.stderr)
        return ""


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--base", required=True)
    r.add_argument("--pages", type=int, required=True)
    r.add_argument("--out", required=True)
    p = sub.add_parser("pages")
    p.add_argument("--ref", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--pages", type=int, required=True)
    p.add_argument("--names", choices=("range", "list"), default="range")
    lo = sub.add_parser("load")
    lo.add_argument("--tool", choices=("wrk", "oha", "coordinator"), required=True)
    lo.add_argument("--report", required=True)
    lo.add_argument("--server-requests", type=int)
    lo.add_argument("--access-log")
    lo.add_argument("--log-offset", type=int, default=0)
    lo.add_argument("--protocol")
    lo.add_argument("--slack", type=int, default=0)
    al = sub.add_parser("access-log")
    al.add_argument("--log", required=True)
    al.add_argument("--offset", type=int, default=0)
    al.add_argument("--protocol")
    al.add_argument("--requests", type=int)
    ra = sub.add_parser("rate")
    ra.add_argument("--dir", required=True)
    ra.add_argument("--pages", type=int, required=True)
    ra.add_argument("--seconds", type=int, required=True)
    th = sub.add_parser("throttled")
    th.add_argument("--summary", required=True)
    th.add_argument("--dir", required=True)
    th.add_argument("--pages", type=int, required=True)
    a = ap.parse_args()

    if a.what == "reference":
        try:
            ref = fetch_reference(a.base, a.pages)
        except RuntimeError as e:
            print(f"validate.py: fetching the reference pages: {e}", file=sys.stderr)
            return 1
        with open(a.out, "w") as f:
            json.dump(ref, f)
        return 0
    if a.what == "pages":
        with open(a.ref) as f:
            result = check_pages(json.load(f), a.dir, a.pages, a.names)
    elif a.what == "load":
        text = read_or_empty(a.report)
        if a.access_log is None:
            result = check_load(a.tool, text, a.server_requests, a.slack)
        else:
            logged = check_access_log(a.access_log, a.log_offset, a.protocol, None)
            result = check_load(a.tool, text, logged["server_requests"], a.slack)
            why = [w for w in (logged["why"], result["why"]) if w]
            result = {**logged, **result, "valid": logged["valid"] and result["valid"],
                      "why": "; ".join(why) or None}
    elif a.what == "access-log":
        result = check_access_log(a.log, a.offset, a.protocol, a.requests)
    elif a.what == "throttled":
        text = read_or_empty(a.summary)
        result = check_throttled(text, a.dir, a.pages)
    else:
        result = check_rate(a.dir, a.pages, a.seconds)
    print(json.dumps(result))
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""An hour of mixed traffic through `osneural serve --workers N`: does the service keep its memory,
its file descriptors and its latency, and does it lose nothing?

    python bench/soak.py --minutes 60 --out soak.json          # node started here (ml-free)
    python bench/soak.py --url http://127.0.0.1:9200 --minutes 10

What it does, all against a real OpenSearch node:

1. builds `soak-docs` from the first `--docs` SciFact documents with `osneural ingest` and every
   default representation (so every built-in spec has its fields);
2. starts `osneural serve --workers N` (default 2) on a free port, `--allow-index 'soak-*'`;
3. runs `--clients` client processes (separate processes, so no client GIL is measured) in a
   closed loop for `--minutes`, each request drawn from a fixed mix: every built-in spec
   (`ext.osneural.spec`), pass-through `_search`, `_count`, malformed requests (bad JSON, NaN,
   duplicate keys, too deep, too large, wrong content type) and refused ones (docs/SECURITY.md:
   an index outside the allow-list, a spec path, scripts, `wrapper`, `profile`, `?scroll=`);
   each client opens a new connection every 50 requests, so connections churn too;
4. from `--ingest-at` (a fraction of the run) runs `osneural ingest` of `--ingest-docs`
   documents into `soak-ingest` (another index) while the traffic goes on;
5. samples every worker's RSS, open file descriptors and threads every `--sample-s` seconds.

Every class has the statuses it must answer (a spec search 200, a malformed body 400/413/415, a
refusal 400/403); anything else is counted as unexpected, and a 5xx among them (or a connection
error) as an unexpected 5xx. The service's designed answers to overload, 503
`osneural_overloaded` and a 504 because every first stage ran past the spec's time budget, are
counted apart as `shed`. The report gives requests and unexpected answers per class, p50 / p95 per window (`--window-
minutes`, default 5) over the requests that reach OpenSearch (specs, pass-through, `_count`),
each worker's RSS at the end of each window, and descriptors / threads at start and end, plus
the checks: last window's p50 and p95 within 10% of the first's, RSS growth under 5% after the
first window, no unexpected 5xx.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from osneural.eval.benchkit import beir_dir, logger

SPECS = ("bm25", "dense", "binary", "multivector", "hybrid", "hybrid-linear")
INDEX = "soak-docs"
INGEST_INDEX = "soak-ingest"
log = logger("soak")
#: classes whose requests reach OpenSearch: the latency windows are computed over these
UPSTREAM = tuple(f"spec:{s}" for s in SPECS) + ("passthrough", "count")
#: class -> weight in the mix
MIX: dict[str, float] = {**{f"spec:{s}": 1.0 for s in SPECS}, "passthrough": 1.0, "count": 1.0,
                         "malformed": 0.6, "refused": 0.6}


# ------------------------------------------------------------------------ requests


def malformed_request(rng: random.Random, q: str) -> tuple[str, str, dict[str, str], bytes, set[int]]:
    """(method, path, headers, body, allowed statuses) of one malformed request."""
    js = {"content-type": "application/json"}
    kind = rng.randrange(7)
    path = f"/{INDEX}/_search"
    if kind == 0:
        return "POST", path, js, b'{"query": {"match": {"text": "x"}', {400}
    if kind == 1:
        return "POST", path, js, b'{"query": {"range": {"year": {"gte": NaN}}}}', {400}
    if kind == 2:
        return "POST", path, js, b'{"size": 1, "size": 2}', {400}
    if kind == 3:
        return "POST", path, js, ("[" * 200 + "]" * 200).encode(), {400}
    if kind == 4:
        return "POST", path, js, b'{"query": {"match": {"text": "' + b"a" * (1 << 21) + b'"}}}', {413}
    if kind == 5:
        return "POST", path, {"content-type": "text/plain"}, json.dumps({"query": {"match_all": {}}}).encode(), {415}
    body = {"size": 5, "ext": {"osneural": {"query": "", "spec": "dense"}}}  # empty query text
    return "POST", path, js, json.dumps(body).encode(), {400}


def refused_request(rng: random.Random, q: str) -> tuple[str, str, dict[str, str], bytes, set[int]]:
    js = {"content-type": "application/json"}
    kind = rng.randrange(6)
    match = {"query": {"match": {"text": q}}}
    if kind == 0:
        return "POST", "/other-index/_search", js, json.dumps(match).encode(), {403}
    if kind == 1:
        body = {"ext": {"osneural": {"query": q, "spec": "/etc/passwd"}}}
        return "POST", f"/{INDEX}/_search", js, json.dumps(body).encode(), {400}
    if kind == 2:
        body = {"query": {"script_score": {"query": {"match_all": {}},
                                           "script": {"source": "1"}}}}
        return "POST", f"/{INDEX}/_search", js, json.dumps(body).encode(), {403}
    if kind == 3:
        body = {"query": {"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}}}
        return "POST", f"/{INDEX}/_search", js, json.dumps(body).encode(), {403}
    if kind == 4:
        return "POST", f"/{INDEX}/_search", js, json.dumps({**match, "profile": True}).encode(), {403}
    return "POST", f"/{INDEX}/_search?scroll=1m", js, json.dumps(match).encode(), {400}


def build_request(cls: str, rng: random.Random, q: str) -> tuple[str, str, dict[str, str], bytes, set[int]]:
    js = {"content-type": "application/json"}
    if cls.startswith("spec:"):
        body = {"size": 10, "_source": ["title"],
                "ext": {"osneural": {"query": q, "spec": cls.split(":", 1)[1]}}}
        return "POST", f"/{INDEX}/_search", js, json.dumps(body).encode(), {200}
    if cls == "passthrough":
        body = {"size": 10, "_source": ["title"], "query": {"match": {"text": q}}}
        return "POST", f"/{INDEX}/_search", js, json.dumps(body).encode(), {200}
    if cls == "count":
        return "POST", f"/{INDEX}/_count", js, json.dumps({"query": {"match": {"text": q}}}).encode(), {200}
    if cls == "malformed":
        return malformed_request(rng, q)
    return refused_request(rng, q)


def error_kind(r: Any) -> str:
    """`shed` for the service's designed answers to overload, else the error type."""
    try:
        err = r.json()["error"]
        kind, reason = str(err.get("type", "")), str(err.get("reason", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "not-json"
    if r.status_code == 503 and kind == "osneural_overloaded":
        return "shed"
    if r.status_code == 504 and "every first stage failed or timed out" in reason \
            and "failed:" not in reason:
        return "shed"
    return kind.replace(",", ";")


def client_main(i: int, base: str, queries: list[str], deadline: float, out: str, seed: int) -> None:
    """One client process: a closed loop until `deadline` (time.time()), one CSV row per request:
    t, class, status, ms, worker pid, expected (1/0), error type of a 5xx (`shed` when it is the
    service's designed answer to overload: 503 `osneural_overloaded`, or 504 because every first
    stage ran past the spec's time budget)."""
    import httpx

    rng = random.Random(seed)
    classes, weights = list(MIX), list(MIX.values())
    http: httpx.Client | None = None
    n = 0
    with open(out, "w") as f:
        while time.time() < deadline:
            if http is None or n % 50 == 0:  # connections churn as well
                if http is not None:
                    http.close()
                http = httpx.Client(base_url=base, timeout=120)
            n += 1
            cls = rng.choices(classes, weights)[0]
            method, path, headers, body, allowed = build_request(cls, rng, rng.choice(queries))
            t0 = time.perf_counter()
            kind = ""
            try:
                r = http.request(method, path, headers=headers, content=body)
                status, worker = r.status_code, r.headers.get("x-osneural-worker", "")
                if status >= 500:
                    kind = error_kind(r)
            except httpx.HTTPError as exc:
                status, worker, kind = 0, "", type(exc).__name__
                http.close()
                http = None
            ms = (time.perf_counter() - t0) * 1e3
            f.write(f"{time.time():.3f},{cls},{status},{ms:.2f},{worker},{int(status in allowed)},{kind}\n")
    if http is not None:
        http.close()


# ------------------------------------------------------------------------ process stats


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def proc_stats(pid: int) -> dict[str, Any] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1), "fds": fds,
            "threads": int(fields["Threads"]), "spawned": b"multiprocessing" in cmd}


class Sampler(threading.Thread):
    """Samples the supervisor's workers (its children) every `every` seconds."""

    def __init__(self, serve_pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.serve_pid, self.every = serve_pid, every
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": time.time(), "workers": {}}
        for pid in children(self.serve_pid):
            st = proc_stats(pid)
            if st is not None:
                row["workers"][str(pid)] = st
        row["supervisor"] = proc_stats(self.serve_pid)
        return row

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.samples.append(self.sample())


# ------------------------------------------------------------------------ setup


def write_corpus(n: int, offset: int, path: Path) -> None:
    src = beir_dir("scifact") / "corpus.jsonl"
    with src.open() as f, path.open("w") as out:
        for i, line in enumerate(f):
            if i < offset:
                continue
            if i >= offset + n:
                break
            out.write(line)


def osneural(*args: str) -> list[str]:
    return [sys.executable, "-m", "osneural.cli", *args]


def start_node(args: argparse.Namespace):
    from osneural.node.launcher import LocalCluster, spread_port_start

    root = Path(tempfile.mkdtemp(prefix="osneural-soak-", dir="/tmp"))
    root.chmod(0o755)
    cluster = LocalCluster(name=f"soak-{os.getpid()}", http_port=spread_port_start(), root=root,
                           heap=args.heap, auto_ports=True)
    t0 = time.perf_counter()
    cluster.start(log=lambda m: log(f"node: {m}"))
    log(f"node up at {cluster.url} in {time.perf_counter() - t0:.0f}s")
    return cluster, root


def existing_docs(url: str, index: str) -> int | None:
    """Documents in `index` on the node at `url`, None when it does not exist."""
    import httpx

    r = httpx.get(f"{url}/{index}/_count", timeout=60)
    return int(r.json()["count"]) if r.status_code == 200 else None


def percentiles(ms: list[float]) -> dict[str, float | int]:
    if not ms:
        return {"n": 0}
    a = np.asarray(ms)
    return {"n": len(ms), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1)}


# ------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> dict[str, Any]:
    from osneural.node.launcher import free_port_block, spread_port_start

    work = Path(tempfile.mkdtemp(prefix="osneural-soak-work-"))
    cluster = None
    serve = ingest = None
    report: dict[str, Any] = {"args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    try:
        if args.url:
            url = args.url
        else:
            cluster, _root = start_node(args)
            url = cluster.url
        env = dict(os.environ)
        corpus = work / "docs.jsonl"
        write_corpus(args.docs, 0, corpus)
        if args.reuse_index and existing_docs(url, INDEX) == args.docs:
            log(f"{INDEX}: reusing the {args.docs} documents already there")
        else:
            t0 = time.perf_counter()
            subprocess.run(osneural("ingest", str(corpus), "--index", INDEX, "--url", url,
                                    "--no-progress"), check=True, env=env)
            report["build_s"] = round(time.perf_counter() - t0, 1)
            log(f"{INDEX}: {args.docs} documents, every default representation, in {report['build_s']}s")
        if args.ingest_docs:  # a run on a reused node starts the side ingestion from scratch
            import httpx

            httpx.delete(f"{url}/{INGEST_INDEX}", params={"ignore_unavailable": "true"}, timeout=60)
        queries = [json.loads(line)["text"] for line in (beir_dir("scifact") / "queries.jsonl").open()]

        port = free_port_block(1, start=spread_port_start(base=12000, span=5000))
        base = f"http://127.0.0.1:{port}"
        serve_log = (work / "serve.log").open("wb")
        serve = subprocess.Popen(
            osneural("serve", "--url", url, "--port", str(port), "--workers", str(args.workers),
                     "--allow-index", "soak-*"),
            stdout=serve_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        import httpx

        deadline = time.monotonic() + 300
        pids: set[str] = set()
        while len(pids) < args.workers:
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not come up: {(work / 'serve.log').read_text()[-2000:]}")
            try:
                r = httpx.get(f"{base}/_osneural/health", timeout=10)
                if r.status_code == 200 and len(r.json().get("encoders_loaded", [])) == 3:
                    pids.add(r.headers["x-osneural-worker"])
            except httpx.HTTPError:
                time.sleep(0.5)
        log(f"serve --workers {args.workers} up on {base} (workers {sorted(pids)})")
        sampler = Sampler(serve.pid, args.sample_s)
        report["start"] = sampler.sample()
        sampler.start()

        t_start = time.time()
        t_end = t_start + args.minutes * 60
        ctx = mp.get_context("spawn")
        files = [str(work / f"client-{i}.csv") for i in range(args.clients)]
        clients = [ctx.Process(target=client_main, args=(i, base, queries, t_end, files[i], 1000 + i))
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        log(f"{args.clients} client processes for {args.minutes} min")
        ingest_info: dict[str, Any] = {}
        ingest_at = t_start + args.ingest_at * args.minutes * 60
        while time.time() < t_end:
            time.sleep(5)
            if ingest is None and args.ingest_docs and time.time() >= ingest_at:
                icorpus = work / "ingest.jsonl"
                write_corpus(args.ingest_docs, args.docs, icorpus)
                ingest_log = (work / "ingest.log").open("wb")
                ingest = subprocess.Popen(
                    osneural("ingest", str(icorpus), "--index", INGEST_INDEX, "--url", url,
                             "--no-progress", "--json"),
                    stdout=ingest_log, stderr=subprocess.STDOUT, env=env)
                ingest_info["start_min"] = round((time.time() - t_start) / 60, 2)
                log(f"ingestion of {args.ingest_docs} documents into {INGEST_INDEX} started")
            if ingest is not None and "end_min" not in ingest_info and ingest.poll() is not None:
                ingest_info["end_min"] = round((time.time() - t_start) / 60, 2)
                ingest_info["exit"] = ingest.returncode
                log(f"ingestion ended with exit {ingest.returncode}")
        for c in clients:
            c.join(timeout=300)
        sampler.stop.set()
        report["end"] = sampler.sample()
        if ingest is not None and "end_min" not in ingest_info:
            ingest.wait(timeout=1800)
            ingest_info["end_min"] = round((time.time() - t_start) / 60, 2)
            ingest_info["exit"] = ingest.returncode
        ingest_info["docs"] = args.ingest_docs
        report["ingest"] = ingest_info
        report["samples"] = sampler.samples
        report.update(summarize(files, t_start, args, sampler.samples))
        # stop the group the way a deployment does: SIGTERM, in-flight requests drain
        serve.send_signal(signal.SIGTERM)
        report["serve_exit"] = serve.wait(timeout=120)
        return report
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
        if cluster is not None:
            cluster.destroy()
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def summarize(files: list[str], t_start: float, args: argparse.Namespace,
              samples: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for path in files:
        with open(path) as f:
            for line in f:
                t, cls, status, ms, worker, ok, kind = line.rstrip("\n").split(",", 6)
                rows.append((float(t) - t_start, cls, int(status), float(ms), worker, ok == "1", kind))
    window_s = args.window_minutes * 60
    n_windows = max(1, int(np.ceil(args.minutes * 60 / window_s)))
    per_class: dict[str, dict[str, Any]] = {}
    for _t, cls, status, _ms, _w, ok, kind in rows:
        c = per_class.setdefault(cls, {"requests": 0, "unexpected": 0, "unexpected_5xx": 0,
                                       "shed": 0, "statuses": {}})
        c["requests"] += 1
        c["statuses"][str(status)] = c["statuses"].get(str(status), 0) + 1
        if ok:
            continue
        if kind == "shed":  # overload answered as designed: counted, not an error of the service
            c["shed"] += 1
            continue
        c["unexpected"] += 1
        if status >= 500 or status == 0:
            c["unexpected_5xx"] += 1
            c.setdefault("unexpected_kinds", {})[kind] = c.get("unexpected_kinds", {}).get(kind, 0) + 1
    windows = []
    for w in range(n_windows):
        lo, hi = w * window_s, (w + 1) * window_s
        ms = [r[3] for r in rows if lo <= r[0] < hi and r[1] in UPSTREAM and r[5]]
        row: dict[str, Any] = {"window": w + 1, "minutes": f"{lo / 60:.0f}-{hi / 60:.0f}",
                               **percentiles(ms)}
        inside = [s for s in samples if lo <= s["t"] - t_start < hi]
        if inside:
            row["rss_mb"] = {pid: st["rss_mb"] for pid, st in inside[-1]["workers"].items()}
        windows.append(row)
    workers = sorted({r[4] for r in rows if r[4].isdigit()})
    checks: dict[str, Any] = {}
    full = [w for w in windows if w.get("n")]
    if len(full) >= 2:
        first, last = full[0], full[-1]
        checks["p50_last_vs_first"] = round(last["p50"] / first["p50"], 3)
        checks["p95_last_vs_first"] = round(last["p95"] / first["p95"], 3)
        growth = {}
        for pid in first.get("rss_mb", {}):
            if pid in last.get("rss_mb", {}):
                growth[pid] = round(last["rss_mb"][pid] / first["rss_mb"][pid] - 1, 4)
        checks["rss_growth_after_first_window"] = growth
    checks["unexpected_5xx"] = sum(c["unexpected_5xx"] for c in per_class.values())
    checks["unexpected"] = sum(c["unexpected"] for c in per_class.values())
    checks["shed"] = sum(c["shed"] for c in per_class.values())
    return {"requests": len(rows), "per_class": per_class, "windows": windows,
            "answered_by": {w: sum(1 for r in rows if r[4] == w) for w in workers},
            "checks": checks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--window-minutes", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--docs", type=int, default=500, help="SciFact documents in soak-docs")
    ap.add_argument("--ingest-docs", type=int, default=1000,
                    help="SciFact documents (after --docs) ingested into soak-ingest meanwhile; 0: none")
    ap.add_argument("--ingest-at", type=float, default=0.25,
                    help="when the ingestion starts, as a fraction of the run")
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--url", default=None, help="a running node (default: start one here)")
    ap.add_argument("--heap", default="1g")
    ap.add_argument("--reuse-index", action="store_true",
                    help="with --url: keep a soak-docs index that already holds --docs documents "
                         "(built by an earlier run) instead of building it again")
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (client CSVs, logs)")
    args = ap.parse_args(argv)
    report = run(args)
    report.pop("samples_raw", None)
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    summary = {k: report[k] for k in ("requests", "per_class", "windows", "answered_by", "checks",
                                      "ingest", "serve_exit") if k in report}
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

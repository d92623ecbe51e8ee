"""osneural against OpenSearch's own neural stack (ml-commons + neural-search), one run, one node.

    nice python bench/peer.py [--docs 1000] [--queries 100] [--clients 8] [--json]
                              [--url URL]    # a running node with ml-commons + neural-search

Why: a user who considers osneural already has the native alternative on the same cluster, the
same ONNX models served by ml-commons, neural-search's `text_embedding` / `sparse_encoding` ingest
processors and its `neural`, `neural_sparse` and `hybrid` queries. Only a side-by-side run on the
same node, with the same documents, queries, batch sizes and response shape, says whether
osneural is worth it.

What it does (a throw-away node on its own port unless `--url` is given, stopped at the end):

1. starts a node with `plugins=("ml-commons", "neural-search")` through the launcher, exports
   all-MiniLM-L6-v2 and the SPLADE in the ml-commons flavour (reused when fresh) and registers and
   deploys both (`osneural.encoders.registry`);
2. ingests the same SciFact subset (the judged documents of the chosen test queries, filled up to
   `--docs`) both ways, in interleaved rounds whose order rotates: native = bulk through an ingest
   pipeline (`text_embedding` or `sparse_encoding`, processor `batch_size` = `--batch-size`),
   osneural = `index_corpus` with the same models at the same batch size and the document
   encoders `osneural ingest` loads with no setting (int8 dense and sparse); `--fp32` adds fp32
   document-encoder rows and the nDCG@10 of both indices;
3. runs the same test queries both ways, interleaved per pass (native, osneural, osneural,
   native, ...), at 1 and at `--clients` concurrent clients: dense (`neural` vs a `dense` stage
   with the same k and ef_search), sparse (`neural_sparse` vs a `sparse` stage), hybrid (a
   `hybrid` query with a min-max normalization search pipeline vs osneural's `linear` fusion with
   min-max, same weights, same depth), and osneural's multi-stage pipelines (fusion + MaxSim)
   against the best native hybrid. Both sides return ids and scores only (`_source: false`,
   `filter_path` on the native side too), and query encoding is inside the timing on both sides.
   By default every query is an HTTP request from one of `--clients` separate client processes
   (keep-alive connections), native ones to the node's `_search`, osneural ones to
   `osneural serve --workers N` (`--serve-workers`, default 2) in front of the same node with
   default settings (no OSNEURAL_* setting passed on): the clients' GIL is not what is measured.
   `--clients-in threads` runs the clients as threads of this process instead, osneural through
   the Python API.
   One more row is a search page: the 0.5/0.5 hybrid with a `terms` aggregation over a
   `category` keyword both indices get natively, and highlight on `text`, on both sides.

Reported per row: docs/s or p50/p95 ms (and QPS), nDCG@10, and osneural / native ratios. The
machine running this is usually shared: only ratios from one interleaved run mean anything.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osneural.eval.benchkit import beir_dir, logger, ndcg10, passage, pct, timed_map

log = logger("peer")

DATA = beir_dir("scifact")
NATIVE_FILTER = "hits.hits._id,hits.hits._score,_shards.failed"
BM25_FIELDS = ["title^1.2", "text"]


# ----------------------------------------------------------------------------- data


def select_data(n_docs: int, n_queries: int) -> tuple[list[dict], dict[str, str], dict]:
    """The first `n_queries` judged test queries, their judged documents, and other documents in
    corpus order up to `n_docs` (so every query can find what it is judged on)."""
    from osneural.eval.beir import load_beir

    coll = load_beir(DATA, "test", limit=n_queries)
    queries = dict(coll.queries)
    qrels = {q: dict(d) for q, d in coll.qrels.items() if q in queries}
    wanted = {d for rel in qrels.values() for d in rel}
    docs, fill = [], []
    with open(DATA / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            doc = {"_id": str(row["_id"]), "title": row.get("title") or "", "text": row["text"]}
            (docs if doc["_id"] in wanted else fill).append(doc)
    docs += fill[: max(0, n_docs - len(docs))]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(docs))  # judged documents spread over every ingest round
    return [docs[i] for i in order], queries, qrels


# ----------------------------------------------------------------------------- node + models


def start_node(args) -> tuple[Any, Any, Path | None]:
    from osneural.connection import ClusterConfig

    if args.url:
        client = ClusterConfig.from_values(args.url).client()
        return client, None, None
    from osneural.node.launcher import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="osneural-peer-", dir="/tmp"))
    root.chmod(0o755)
    cluster = LocalCluster(name=f"peer-{os.getpid()}", http_port=args.port, root=root, heap=args.heap,
                           plugins=("ml-commons", "neural-search"), auto_ports=True)
    t0 = time.perf_counter()
    cluster.start(log=lambda m: log(f"node: {m}"))
    log(f"node with ml-commons + neural-search up at {cluster.url} in {time.perf_counter() - t0:.0f}s")
    client = ClusterConfig.from_values(cluster.url).client()
    # Our throw-away node only: ml-commons' breakers look at the whole machine's memory, which a
    # shared box's other processes fill; that is not what this bench measures.
    client.cluster.put_settings(body={"persistent": {
        "plugins.ml_commons.native_memory_threshold": 100,
        "plugins.ml_commons.jvm_heap_memory_threshold": 95}})
    return client, cluster, root


def mlcommons_exports() -> dict[str, Path]:
    """Both default encoders in the ml-commons flavour, exported again only when stale."""
    from osneural.encoders.defaults import DEFAULT_DIRS, default_export_dir
    from osneural.encoders.manifest import read_manifest
    from osneural.encoders.mlcommons import export_mlcommons, read_info
    from osneural.paths import models_dir

    out = {}
    for kind in ("dense", "sparse"):
        folder = models_dir() / f"{DEFAULT_DIRS[kind]}-mlcommons"
        try:
            info = read_info(folder)
            fresh = (info.get("parity") is not None
                     and info["weights_sha256"] == read_manifest(default_export_dir(kind))["sha256"])
        except Exception:  # noqa: BLE001 - missing or unreadable: export again
            fresh = False
        if not fresh:
            log(f"exporting the {kind} encoder for ml-commons")
            export_mlcommons(kind, out=folder)
        out[kind] = folder
    return out


# ----------------------------------------------------------------------------- ingestion


def native_index_body(client, osn_index: str, kind: str) -> dict:
    """The native index: the same field mapping and shard count as osneural's, plus the
    `passage` the ingest processor reads."""
    got = client.indices.get(index=osn_index)[osn_index]
    props = got["mappings"]["properties"]
    settings = got["settings"]["index"]
    mapping = {"title": props["title"], "text": props["text"],
               "passage": {"type": "text", "index": False}, kind: props[kind]}
    idx: dict[str, Any] = {"number_of_shards": int(settings["number_of_shards"]),
                           "number_of_replicas": 0}
    if kind == "dense":
        idx["knn"] = True
    return {"settings": {"index": idx}, "mappings": {"properties": mapping}}


def native_bulk(client, index: str, pipeline: str, docs: list[dict], batch_size: int) -> None:
    from opensearchpy import helpers

    actions = ({"_index": index, "_id": d["_id"], "_source": {
        "title": d["title"], "text": d["text"], "passage": passage(d)}} for d in docs)
    ok, errors = helpers.bulk(client, actions, chunk_size=batch_size, pipeline=pipeline,
                              request_timeout=600, raise_on_error=False, max_retries=3)
    if errors:
        raise RuntimeError(f"native bulk into {index}: {len(errors)} documents failed, "
                           f"first: {json.dumps(errors[0])[:400]}")
    client.indices.refresh(index=index)


def ingest_both(client, docs, kind: str, models: dict, encoders: dict, fp32: dict | None,
                args, names: dict[str, str]) -> dict[str, dict]:
    """docs/s of native / osneural (default document encoders) / osneural fp32 (when asked) for
    one representation, in rounds whose order rotates, so drifting machine load falls on every
    side alike."""
    from osneural.ingest.indexer import index_corpus

    processor = "text_embedding" if kind == "dense" else "sparse_encoding"
    pipeline = f"peer-{kind}"
    client.ingest.put_pipeline(id=pipeline, body={"processors": [{processor: {
        "model_id": models[kind]["model_id"], "field_map": {"passage": kind},
        "batch_size": args.batch_size}}]})
    sides = ["osneural", "native"] + (["osneural-fp32"] if fp32 else [])
    # Warm both sides outside the timing, as the query rows are: the first runs of a model pay
    # for allocation and (in the node) JIT compilation, which is not ingestion throughput.
    warm = [passage(d) for d in docs[:16]]
    client.ingest.simulate(id=pipeline, body={"docs": [{"_source": {"passage": t}} for t in warm]})
    for encs in (encoders, fp32 or {}):
        if kind in encs:
            encs[kind].encode_documents(warm)
    seconds = {s: 0.0 for s in sides}
    stages: dict[str, dict[str, float]] = {s: {} for s in sides}  # osneural's own breakdown
    rounds = max(1, args.rounds)
    size = -(-len(docs) // rounds)
    for r in range(rounds):
        chunk = docs[r * size : (r + 1) * size]
        order = sides[r % len(sides):] + sides[: r % len(sides)]
        if r == 0:
            order = [s for s in order if s != "native"] + ["native"]  # its mapping copies ours
        for side in order:
            t0 = time.perf_counter()
            if side == "native":
                if r == 0:
                    client.indices.create(index=names["native"],
                                          body=native_index_body(client, names["osneural"], kind))
                native_bulk(client, names["native"], pipeline, chunk, args.batch_size)
            else:
                encs = {kind: (fp32 if side == "osneural-fp32" else encoders)[kind]}
                summary = index_corpus(client, chunk, names[side], representations=kind,
                                       batch_size=args.batch_size, encoders=encs, progress=False)
                if getattr(summary, "failed", 0):
                    raise RuntimeError(f"{side} ingest of {kind}: {summary.failed} failed")
                for stage, secs in summary.stage_seconds.items():
                    stages[side][stage] = stages[side].get(stage, 0.0) + secs
            dt = time.perf_counter() - t0
            seconds[side] += dt
            log(f"ingest {kind} round {r + 1}/{rounds} {side}: {len(chunk)} docs in {dt:.1f}s")
    counts = {s: client.count(index=names[s])["count"] for s in sides}
    for s, n in counts.items():
        if n != len(docs):
            raise RuntimeError(f"{names[s]} holds {n} documents, expected {len(docs)}")
    return {s: {"seconds": seconds[s], "docs_per_s": len(docs) / seconds[s],
                **({"stage_seconds": stages[s]} if stages[s] else {})} for s in sides}


# ----------------------------------------------------------------------------- queries


def run_pass(fn, queries: dict[str, str], clients: int) -> tuple[dict[str, list[str]], list[float], float]:
    """`fn(text) -> ids` over every query with `clients` threads: ids, latencies (ms), seconds."""
    return timed_map(lambda qid: fn(queries[qid]), list(queries), clients)


# ----------------------------------------------------------------------------- client processes


@dataclass(frozen=True)
class HttpTarget:
    """One side of a row sent over HTTP by client processes: `POST base + path` with
    `params`, the body built from the query text by `body_of` (in this process, outside the
    timing). Native rows go to the node, osneural rows to `osneural serve --workers`."""

    base: str
    path: str
    params: tuple[tuple[str, str], ...]
    body_of: Callable[[str], dict]


def _client_process(conn: Any) -> None:
    """One client process: runs every batch of requests it is sent, one after the other over
    keep-alive connections, and answers [(ids, ms, osneural timings or None, error or None)].
    A separate process, so what a row measures is the server, not this bench's GIL."""
    import httpx

    sessions: dict[str, Any] = {}
    while True:
        job = conn.recv()
        if job is None:
            break
        base, path, params, bodies = job
        http = sessions.get(base)
        if http is None:
            http = sessions[base] = httpx.Client(base_url=base, timeout=600)
        out = []
        for body in bodies:
            t0 = time.perf_counter()
            try:
                r = http.post(path, params=dict(params), content=body,
                              headers={"content-type": "application/json"})
                data = r.json() if r.status_code == 200 else None
                err = None if data is not None else f"HTTP {r.status_code}: {r.text[:300]}"
            except (httpx.HTTPError, ValueError) as exc:
                data, err = None, f"{type(exc).__name__}: {exc}"
            ms = (time.perf_counter() - t0) * 1e3
            if data is not None and (data.get("_shards") or {}).get("failed"):
                data, err = None, "shards failed"
            ids = [h["_id"] for h in ((data or {}).get("hits") or {}).get("hits", [])]
            timings = (((data or {}).get("ext") or {}).get("osneural") or {}).get("timings_ms")
            out.append((ids, ms, timings, err))
        conn.send(out)
    for http in sessions.values():
        http.close()


class ClientProcesses:
    """`n` client processes (spawned once, reused by every pass) that send a pass's queries
    concurrently: query i goes to client i % clients, each client sends its share in a closed
    loop."""

    def __init__(self, n: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_process, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, target: HttpTarget, queries: dict[str, str], clients: int
            ) -> tuple[dict[str, list[str]], list[float], float, list[dict]]:
        """(ids per query, latencies ms, wall seconds, osneural timings) of one pass."""
        import orjson

        if clients > len(self.conns):
            raise ValueError(f"{clients} clients asked, {len(self.conns)} processes started")
        qids = list(queries)
        shares = [qids[c::clients] for c in range(clients)]
        t0 = time.perf_counter()
        for c, share in enumerate(shares):
            bodies = [orjson.dumps(target.body_of(queries[q])) for q in share]
            self.conns[c].send((target.base, target.path, target.params, bodies))
        out: dict[str, list[str]] = {}
        lat: list[float] = []
        timings: list[dict] = []
        for c, share in enumerate(shares):
            for qid, (ids, ms, tm, err) in zip(share, self.conns[c].recv(), strict=True):
                if err:
                    raise RuntimeError(f"{target.base}{target.path}: query {qid}: {err}")
                out[qid] = ids
                lat.append(ms)
                if tm:
                    timings.append(tm)
        return out, lat, time.perf_counter() - t0, timings

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def native_target(url: str, index: str, query_of, pipeline: str | None = None,
                  extra: dict | None = None) -> HttpTarget:
    params = [("filter_path", FEATURES_FILTER if extra else NATIVE_FILTER)]
    if pipeline:
        params.append(("search_pipeline", pipeline))
    return HttpTarget(url, f"/{index}/_search", tuple(params),
                      lambda text: {"size": 10, "_source": False, "query": query_of(text),
                                    **(extra or {})})


def serve_target(url: str, index: str, spec: dict, body: dict | None = None) -> HttpTarget:
    """An `ext.osneural` search with an inline spec through `osneural serve`."""
    return HttpTarget(url, f"/{index}/_search", (),
                      lambda text: {**(body or {}), "ext": {"osneural": {"query": text, "spec": spec}}})


#: environment variables that change osneural's query or document settings: removed for the
#: `serve` processes so the rows measure what a user gets with no configuration
SETTING_VARIABLES = ("OSNEURAL_QUERY_PRECISION", "OSNEURAL_DOCUMENT_PRECISION",
                     "OSNEURAL_QUERY_THREADS", "OSNEURAL_CODE_CACHE_MB")


def start_serve(url: str, workers: int, workdir: Path, allow: tuple[str, ...] = ("peer-*",),
                settings: dict[str, str] | None = None) -> tuple[Any, str]:
    """`osneural serve --workers N` in front of the node, default settings unless `settings`
    names some; (process, base)."""
    import subprocess

    import httpx

    from osneural.node.launcher import free_port_block, spread_port_start

    port = free_port_block(1, start=spread_port_start(base=12000, span=5000))
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}
    env.update(settings or {})
    log_path = workdir / f"serve-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "osneural.cli", "serve", "--url", url, "--port", str(port),
         "--workers", str(workers), *(a for pattern in allow for a in ("--allow-index", pattern))],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    pids: set[str] = set()
    while len(pids) < workers:  # each worker answers health once its encoders are loaded
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"serve did not come up: {log_path.read_text()[-2000:]}")
        try:
            with httpx.Client(base_url=base, timeout=10) as http:  # a new connection each time
                r = http.get("/_osneural/health")
            if r.status_code == 200:
                pids.add(r.headers.get("x-osneural-worker", ""))
        except httpx.HTTPError:
            time.sleep(0.5)
    log(f"osneural serve --workers {workers} up on {base} ({settings or 'default settings'})")
    return proc, base


#: what a search page adds to a hybrid query: a facet and highlighted snippets
PAGE_FEATURES = {"aggs": {"category": {"terms": {"field": "category"}}},
                 "highlight": {"fields": {"text": {}}}}
FEATURES_FILTER = NATIVE_FILTER + ",hits.hits.highlight,aggregations"


def add_app_fields(client, index: str, docs: list[dict]) -> None:
    """A `category` keyword (8 values, from the id) on every document, written natively."""
    import zlib

    from opensearchpy import helpers

    client.indices.put_mapping(index=index, body={"properties": {"category": {"type": "keyword"}}})
    helpers.bulk(client, ({"_op_type": "update", "_index": index, "_id": d["_id"],
                           "doc": {"category": f"c{zlib.crc32(d['_id'].encode()) % 8}"}}
                          for d in docs), refresh=True)


def native_fn(client, index: str, query_of, pipeline: str | None = None,
              extra: dict | None = None):
    params: dict[str, Any] = {"filter_path": FEATURES_FILTER if extra else NATIVE_FILTER}
    if pipeline:
        params["search_pipeline"] = pipeline

    def fn(text: str) -> list[str]:
        resp = client.search(index=index, body={"size": 10, "_source": False,
                                                "query": query_of(text), **(extra or {})},
                             params=params)
        if (resp.get("_shards") or {}).get("failed"):
            raise RuntimeError(f"native search on {index}: shards failed")
        return [h["_id"] for h in (resp.get("hits") or {}).get("hits", [])]

    return fn


def osneural_fn(searcher, spec, body: dict | None = None):
    from osneural.plugin import parse_spec

    parsed = parse_spec(spec)

    def fn(text: str) -> list[str]:
        resp = searcher.search(text, parsed, body)
        fn.timings.append(resp["ext"]["osneural"]["timings_ms"])
        return [h["_id"] for h in resp["hits"]["hits"]]

    fn.timings = []  # per query: where osneural's time went (encode, stages, check, fusion)
    return fn


def compare(pairs: list[tuple[str, str, Any]], queries, qrels, clients_list, passes: int,
            rows: list[dict], pool: ClientProcesses | None = None) -> None:
    """Every (row, side, fn or HttpTarget) over the same queries, interleaved: pass p runs the
    sides in order, then reversed, so neither side always goes first. An `HttpTarget` is sent
    by `pool`'s client processes, a function is called from threads of this process."""

    def one_pass(fn: Any, qs: dict[str, str], clients: int):
        if isinstance(fn, HttpTarget):
            return pool.run(fn, qs, clients)
        ids, lat, secs = run_pass(fn, qs, clients)
        return ids, lat, secs, None

    warm = dict(itertools.islice(queries.items(), 3))
    for _r, _s, fn in pairs:
        one_pass(fn, warm, 1)  # warm: encoders, codecs, caches, JIT on both sides
    for clients in clients_list:
        acc: dict[tuple[str, str], dict[str, Any]] = {}
        for _r, _s, fn in pairs:
            if hasattr(fn, "timings"):
                fn.timings.clear()
        for p in range(passes):
            order = pairs if p % 2 == 0 else pairs[::-1]
            for row, side, fn in order:
                ids, lat, secs, timings = one_pass(fn, queries, clients)
                a = acc.setdefault((row, side), {"lat": [], "secs": 0.0, "ids": ids, "timings": []})
                a["lat"] += lat
                a["secs"] += secs
                a["timings"] += timings if timings is not None else []
        fns = {(row, side): fn for row, side, fn in pairs}
        for (row, side), a in acc.items():
            p50, p95 = pct(a["lat"])
            rows.append({"row": row, "side": side, "clients": clients, "p50_ms": p50,
                         "p95_ms": p95, "qps": len(a["lat"]) / a["secs"],
                         "ndcg@10": ndcg10(a["ids"], qrels),
                         "via": "http" if isinstance(fns[(row, side)], HttpTarget) else "python"})
            timings = a["timings"] or getattr(fns[(row, side)], "timings", None)
            if timings:
                keys = sorted({k for t in timings for k in t})
                rows[-1]["osneural_p50_ms"] = {
                    k: round(float(np.median([t[k] for t in timings if k in t])), 2) for k in keys}
            log(f"{row} {side} clients={clients}: p50 {p50:.1f} p95 {p95:.1f} ms, "
                f"nDCG@10 {rows[-1]['ndcg@10']:.4f}")


def hybrid_pipeline(client, name: str, weights: list[float]) -> None:
    client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body={
        "phase_results_processors": [{"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": weights}}}}]})


# ----------------------------------------------------------------------------- report


def ratio_table(ingest: dict, rows: list[dict], best_native_hybrid: str | None) -> list[dict]:
    out = []
    for kind, sides in ingest.items():
        nat = sides["native"]["docs_per_s"]
        for side in ("osneural", "osneural-fp32"):
            if side in sides:
                out.append({"what": f"ingest {kind} docs/s", "side": side,
                            "native": nat, "osneural": sides[side]["docs_per_s"],
                            "ratio": sides[side]["docs_per_s"] / nat, "better": "higher"})
    by = {(r["row"], r["side"], r["clients"]): r for r in rows}
    for (row, side, clients), r in by.items():
        if side == "native":
            continue
        ref_row = row if (row, "native", clients) in by else best_native_hybrid
        ref = by.get((ref_row, "native", clients))
        if ref is None:
            continue
        out.append({"what": f"{row} (vs native {ref_row})", "side": side, "clients": clients,
                    "p50_ratio": r["p50_ms"] / ref["p50_ms"], "p95_ratio": r["p95_ms"] / ref["p95_ms"],
                    "ndcg_native": ref["ndcg@10"], "ndcg_osneural": r["ndcg@10"]})
    return out


def print_tables(result: dict) -> None:
    print(f"\nSciFact subset: {result['docs']} documents, {result['queries']} test queries, "
          f"batch size {result['batch_size']}, {result['passes']} interleaved passes\n")
    print("| ingest | native docs/s | osneural docs/s | osneural / native |")
    print("|---|---:|---:|---:|")
    for kind, sides in result["ingest"].items():
        nat = sides["native"]["docs_per_s"]
        for side in ("osneural", "osneural-fp32"):
            if side in sides:
                d = sides[side]["docs_per_s"]
                print(f"| {kind}, {side} | {nat:.1f} | {d:.1f} | {d / nat:.2f}x |")
    if result.get("int8_ndcg"):
        print("\n| document encoder | nDCG@10 fp32 index | nDCG@10 default index | delta (points) |")
        print("|---|---:|---:|---:|")
        for kind, v in result["int8_ndcg"].items():
            print(f"| {kind} | {v['fp32']:.4f} | {v['default']:.4f} | {100 * (v['default'] - v['fp32']):+.2f} |")
    print(f"\nBest native hybrid (nDCG@10 at 1 client): {result.get('best_native_hybrid')}")
    print("\n| query | clients | side | p50 ms | p95 ms | QPS | nDCG@10 |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['row']} | {r['clients']} | {r['side']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
              f"| {r['qps']:.1f} | {r['ndcg@10']:.4f} |")
    if result.get("query_clients"):
        print(f"\nQueries: {result['query_clients']}")
    print("\n| osneural p50 ms per part (1 client) | parts |")
    print("|---|---|")
    for r in result["rows"]:
        if r["clients"] == 1 and r.get("osneural_p50_ms"):
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["osneural_p50_ms"].items())
            print(f"| {r['row']} | {parts} |")
    print("\n| osneural / native | clients | p50 | p95 | nDCG@10 native / osneural |")
    print("|---|---:|---:|---:|---|")
    for r in result["ratios"]:
        if "p50_ratio" in r:
            print(f"| {r['what']} [{r['side']}] | {r['clients']} | {r['p50_ratio']:.2f}x "
                  f"| {r['p95_ratio']:.2f}x | {r['ndcg_native']:.4f} / {r['ndcg_osneural']:.4f} |")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--passes", type=int, default=2, help="interleaved query passes per row")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved ingest rounds")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--url", default=None, help="a running node with ml-commons + neural-search")
    ap.add_argument("--port", type=int, default=19600,
                    help="where the search for a free port block for the node starts")
    ap.add_argument("--heap", default="1g")
    ap.add_argument("--fp32", action="store_true",
                    help="add fp32 document-encoder ingest rows beside the default ones")
    ap.add_argument("--clients-in", choices=("processes", "threads"), default="processes",
                    help="processes (default): every query goes over HTTP from separate client "
                         "processes, osneural's through `osneural serve --workers`; threads: "
                         "native through opensearch-py and osneural through the Python API, "
                         "from threads of this process")
    ap.add_argument("--serve-workers", type=int, default=2,
                    help="`osneural serve --workers` for the HTTP rows (default 2)")
    ap.add_argument("--no-multistage", action="store_true", help="skip the MaxSim pipelines")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="print the tables of an earlier run's --out file, run nothing")
    args = ap.parse_args(argv)
    if args.report:
        print_tables(json.loads(Path(args.report).read_text()))
        return 0

    import signal

    from osneural.ingest.batch import load_encoders
    from osneural.plugin import Searcher
    from osneural.plugin.resources import EncoderCache, ResourceCache

    from osneural.encoders import load_default
    from osneural.encoders.registry import record_model, register_model, undeploy

    # `timeout` / kill send SIGTERM: exit through the `finally` below, so the node is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_all = time.perf_counter()
    docs, queries, qrels = select_data(args.docs, args.queries)
    log(f"{len(docs)} documents, {len(queries)} queries")
    exports = mlcommons_exports()
    workdir = Path(tempfile.mkdtemp(prefix="osneural-peer-models-", dir="/tmp"))
    client, cluster, root = start_node(args)
    node_url = args.url.split(",")[0] if args.url else cluster.url
    client.transport.timeout = 600
    serve = pool = None
    serve_cold: list[Any] = []
    models: dict[str, dict] = {}
    names_all: list[str] = []
    try:
        for kind, folder in exports.items():
            models[kind] = register_model(client, folder, apply_settings=True, log=log)
        # the `osneural` side: the document encoders `osneural ingest` loads with no setting
        # (OSNEURAL_DOCUMENT_PRECISION ignored here); `osneural-fp32` names its precision
        encoders = load_encoders(["dense", "sparse"], batch_size=args.batch_size, precision="auto")
        log("osneural document encoders (default settings): " + ", ".join(
            f"{k} {e.precision}" for k, e in encoders.items()))
        fp32 = ({k: load_default(k, precision="fp32", batch_size=args.batch_size)
                 for k in ("dense", "sparse")} if args.fp32 else None)

        ingest: dict[str, dict] = {}
        names: dict[str, dict[str, str]] = {}
        for kind in ("dense", "sparse"):
            names[kind] = {"native": f"peer-native-{kind}", "osneural": f"peer-osneural-{kind}",
                           "osneural-fp32": f"peer-osneural-fp32-{kind}"}
            for n in names[kind].values():
                client.indices.delete(index=n, ignore_unavailable=True)
                names_all.append(n)
            ingest[kind] = ingest_both(client, docs, kind, models, encoders, fp32, args, names[kind])
            for side in ("osneural", "osneural-fp32"):
                if fp32 or side == "osneural":
                    record_model(client, names[kind][side], kind, models[kind])  # '.' tokens as native
            if args.out:  # a run cut short later still leaves the ingest rows
                Path(args.out).write_text(json.dumps({"stage": "ingest", "ingest": ingest}, indent=1))
        encoders = fp32 = None  # the query side loads its own: serve's workers, or this cache
        cache = ResourceCache(EncoderCache(precision="auto"))  # what serve and the API use
        searchers = {}
        http = args.clients_in == "processes"
        if http:
            serve, serve_url = start_serve(node_url, args.serve_workers, workdir)
            pool = ClientProcesses(args.clients)

        def searcher(index: str, with_cache: Any = None):
            key = (index, id(with_cache))
            if key not in searchers:
                searchers[key] = Searcher(client, index, cache=with_cache or cache)
            return searchers[key]

        dm, sm = models["dense"]["model_id"], models["sparse"]["model_id"]
        ef = 100
        dense_q = lambda t: {"neural": {"dense": {"query_text": t, "model_id": dm, "k": 10,  # noqa: E731
                                                  "method_parameters": {"ef_search": ef}}}}
        sparse_q = lambda t: {"neural_sparse": {"sparse": {"query_text": t, "model_id": sm}}}  # noqa: E731
        bm25_q = lambda t: {"multi_match": {"query": t, "fields": BM25_FIELDS,  # noqa: E731
                                            "type": "best_fields"}}
        hybrid_q = lambda t: {"hybrid": {"queries": [bm25_q(t), dense_q(t)]}}  # noqa: E731
        dense_spec = {"first_stages": [{"type": "dense", "k": 10, "num_candidates": ef}],
                      "size": 10, "_source": False}
        sparse_spec = {"first_stages": [{"type": "sparse", "k": 10, "max_terms": 1024}],
                       "size": 10, "_source": False}

        def hybrid_spec(w):
            return {"first_stages": [{"type": "bm25", "k": 10, "fields": BM25_FIELDS},
                                     {"type": "dense", "k": 10, "num_candidates": ef}],
                    "fusion": {"type": "linear", "normalization": "minmax", "weights": w},
                    "size": 10, "_source": False}

        hybrids = {"hybrid 0.3/0.7": [0.3, 0.7], "hybrid 0.5/0.5": [0.5, 0.5]}
        for label, w in hybrids.items():
            hybrid_pipeline(client, f"peer-{label.split()[1].replace('/', '-')}", w)
        nd, ns = names["dense"], names["sparse"]

        def nat(index: str, query_of, pipe: str | None = None, extra: dict | None = None):
            if http:
                return native_target(node_url, index, query_of, pipe, extra)
            return native_fn(client, index, query_of, pipe, extra)

        def osn(index: str, spec: dict, body: dict | None = None):
            if http:
                return serve_target(serve_url, index, spec, body)
            return osneural_fn(searcher(index), spec, body)

        pairs = [
            ("dense", "native", nat(nd["native"], dense_q)),
            ("dense", "osneural", osn(nd["osneural"], dense_spec)),
            ("sparse", "native", nat(ns["native"], sparse_q)),
            ("sparse", "osneural", osn(ns["osneural"], sparse_spec)),
        ]
        for label, w in hybrids.items():
            pipe = f"peer-{label.split()[1].replace('/', '-')}"
            pairs += [(label, "native", nat(nd["native"], hybrid_q, pipe)),
                      (label, "osneural", osn(nd["osneural"], hybrid_spec(w)))]
        # A search page: the 0.5/0.5 hybrid with a terms aggregation and highlight on both sides
        for index in (nd["native"], nd["osneural"]):
            add_app_fields(client, index, docs)
        page_pipe = "peer-0.5-0.5"
        pairs += [("hybrid 0.5/0.5 + terms agg + highlight", "native",
                   nat(nd["native"], hybrid_q, page_pipe, PAGE_FEATURES)),
                  ("hybrid 0.5/0.5 + terms agg + highlight", "osneural",
                   osn(nd["osneural"], hybrid_spec([0.5, 0.5]), PAGE_FEATURES))]
        rows: list[dict] = []
        compare(pairs, queries, qrels, [1, args.clients], args.passes, rows, pool)

        int8_ndcg = {}
        if args.fp32:  # quality of the default (int8) document encoders against fp32
            for kind, spec in (("dense", dense_spec), ("sparse", sparse_spec)):
                vals = {}
                for side, key in (("osneural-fp32", "fp32"), ("osneural", "default")):
                    ids, _lat, _s = run_pass(osneural_fn(searcher(names[kind][side]), spec),
                                             queries, 1)
                    vals[key] = ndcg10(ids, qrels)
                int8_ndcg[kind] = vals

        nat_h = [r for r in rows if r["side"] == "native" and r["row"].startswith("hybrid")
                 and r["clients"] == 1]
        best = max(nat_h, key=lambda r: r["ndcg@10"])["row"] if nat_h else None

        def snapshot(stage: str) -> dict:
            return {"docs": len(docs), "queries": len(queries), "batch_size": args.batch_size,
                    "passes": args.passes, "rounds": args.rounds, "clients": [1, args.clients],
                    "models": {k: {x: v[x] for x in ("model_id", "register_s", "deploy_s")}
                               for k, v in models.items()},
                    "ingest": ingest, "int8_ndcg": int8_ndcg, "rows": rows,
                    "best_native_hybrid": best, "ratios": ratio_table(ingest, rows, best),
                    "complete": stage == "done", "stage": stage,
                    "query_clients": (f"{args.clients} client processes over HTTP (keep-alive); "
                                      f"osneural through `osneural serve --workers "
                                      f"{args.serve_workers}`, default settings" if http else
                                      "threads of the bench process; osneural through the "
                                      "Python API"),
                    "command": "nice python bench/peer.py " + " ".join(
                        sys.argv[1:] if argv is None else argv),
                    "seconds": time.perf_counter() - t_all}

        if args.out:  # a run cut short later still leaves these rows
            Path(args.out).write_text(json.dumps(snapshot("single-stage rows"), indent=1))
        if not args.no_multistage and best is not None:
            # Phase B: an index with every representation (its codec training is slow on a
            # loaded box, so it comes after the single-stage rows), osneural's multi-stage
            # pipelines interleaved with the best native hybrid run again beside them.
            from importlib import resources

            from osneural.ingest.indexer import index_corpus

            full = "peer-osneural-full"
            client.indices.delete(index=full, ignore_unavailable=True)
            names_all.append(full)
            t0 = time.perf_counter()
            index_corpus(client, docs, full, representations="dense,sparse,multivector",
                         batch_size=args.batch_size, progress=False)
            log(f"osneural multi-representation index: {time.perf_counter() - t0:.0f}s")
            best_w = hybrids[best]
            pipe = f"peer-{best.split()[1].replace('/', '-')}"
            multi = [(f"{best} (phase B)", "native", nat(nd["native"], hybrid_q, pipe)),
                     (f"{best} (phase B)", "osneural", osn(nd["osneural"], hybrid_spec(best_w)))]
            for spec_name in ("hybrid", "multivector"):
                text = (resources.files("osneural.plugin") / "specs" / f"{spec_name}.json").read_text()
                spec = dict(json.loads(text), _source=False)
                multi.append((f"multi-stage {spec_name}.json", "osneural", osn(full, spec)))
                if spec_name == "hybrid" and http:
                    # the same flagship through a serve group whose code cache is off: every
                    # query reads its candidates' token codes from OpenSearch (a cold cache)
                    cold, cold_url = start_serve(node_url, args.serve_workers, workdir,
                                                 settings={"OSNEURAL_CODE_CACHE_MB": "0"})
                    serve_cold.append(cold)
                    multi.append(("multi-stage hybrid.json, code cache off", "osneural",
                                  serve_target(cold_url, full, spec, None)))
            compare(multi, queries, qrels, [1, args.clients], args.passes, rows, pool)
            best = f"{best} (phase B)"
        result = snapshot("done")
        for s in searchers.values():
            s.close()
    finally:
        if pool is not None:
            pool.close()
        for proc in [serve, *serve_cold]:
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:  # noqa: BLE001 - stuck: kill it, the node goes next
                proc.kill()
        if cluster is None:  # a user's node: leave it as we found it
            for n in names_all:
                client.indices.delete(index=n, ignore_unavailable=True)
            for entry in models.values():
                undeploy(client, entry["model_id"], delete=True)
        else:
            cluster.destroy()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

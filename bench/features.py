"""What a search page's features cost beside the default pipeline, on SciFact.

    nice python bench/features.py [--url URL] [--limit 1000] [--queries 100] [--json]

Without `--url` a throw-away local node is started (and removed at the end). The first `--limit`
SciFact documents are ingested with the representations the default `hybrid` spec reads (text,
dense, sparse, multivector), then each document gets app fields with native OpenSearch calls:
`category` (keyword, 8 values) and `year` (integer). Every SciFact test query (the first
`--queries`) then runs through `Searcher.search` with no spec (the default pipeline) once per
configuration, configurations interleaved query by query so machine noise falls on all of them
alike: features off; a `terms` aggregation; highlight on `text`; `track_total_hits`; the three
together (what a faceted search page sends); `sort` by a field; `collapse`; `post_filter`;
`search_after` from the previous page. p50 / p95 in milliseconds and each p50's ratio to "off".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib

import numpy as np
from osneural.eval.benchkit import beir_dir, corpus_records

DATA = beir_dir("scifact")
INDEX = "osneural-features-scifact"
AGGS = {"cats": {"terms": {"field": "category"}}}
HIGHLIGHT = {"fields": {"text": {}}}
CONFIGS: dict[str, dict] = {
    "off": {},
    "aggs (terms)": {"aggs": AGGS},
    "highlight": {"highlight": HIGHLIGHT},
    "track_total_hits": {"track_total_hits": True},
    "aggs + highlight + total": {"aggs": AGGS, "highlight": HIGHLIGHT, "track_total_hits": True},
    "sort by field": {"sort": [{"year": "desc"}]},
    "collapse": {"collapse": {"field": "category"}},
    "post_filter": {"post_filter": {"term": {"category": "c3"}}},
    "search_after (page 2)": {"search_after": None},
}


def app_fields(doc_id: str) -> dict:
    h = zlib.crc32(doc_id.encode())
    return {"category": f"c{h % 8}", "year": 2000 + (h >> 8) % 20}


def build(client, limit: int) -> None:
    from opensearchpy import helpers
    from osneural.ingest.indexer import index_corpus

    docs = corpus_records(DATA, limit)
    index_corpus(client, docs, INDEX, representations=["text", "dense", "sparse", "multivector"],
                 progress=False)
    client.indices.put_mapping(index=INDEX, body={"properties": {
        "category": {"type": "keyword"}, "year": {"type": "integer"}}})
    helpers.bulk(client, ({"_op_type": "update", "_index": INDEX, "_id": d["_id"],
                           "doc": app_fields(d["_id"])} for d in docs), refresh=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="a running node (default: start a throw-away one)")
    ap.add_argument("--limit", type=int, default=1000, help="SciFact documents to ingest")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from osneural.eval.beir import load_beir
    from osneural.plugin import Searcher

    handle = None
    url = args.url
    if url is None:
        from osneural.node.engine import start_test_engine

        url, handle = start_test_engine()
    client = OpenSearch([url], timeout=120)
    try:
        if not client.indices.exists(index=INDEX):
            t0 = time.perf_counter()
            build(client, args.limit)
            print(f"built {INDEX} ({args.limit} docs) in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
        queries = list(load_beir(DATA, "test").queries.values())[: args.queries]
        searcher = Searcher(client, INDEX)
        spec_name = searcher.search(queries[0])["ext"]["osneural"]["spec"]
        for q in queries[:5]:  # warm encoders, codecs and the node's caches
            for body in CONFIGS.values():
                if "search_after" not in body:
                    searcher.search(q, None, body)
        lat: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for q in queries:
            last = None
            for name, body in CONFIGS.items():
                if "search_after" in body:
                    body = {"search_after": last}
                t0 = time.perf_counter()
                resp = searcher.search(q, None, body)
                lat[name].append((time.perf_counter() - t0) * 1e3)
                if name == "off":
                    hits = resp["hits"]["hits"]
                    last = hits[-1]["sort"] if hits else [0.0, ""]
        searcher.close()
    finally:
        client.close()
        if handle is not None:
            handle.stop()
    base = float(np.percentile(lat["off"], 50))
    rows = [{"feature": name, "p50_ms": float(np.percentile(v, 50)),
             "p95_ms": float(np.percentile(v, 95)),
             "p50_vs_off": float(np.percentile(v, 50)) / base} for name, v in lat.items()]
    if args.json:
        print(json.dumps({"spec": spec_name, "docs": args.limit, "queries": len(queries),
                          "rows": rows}, indent=2))
        return 0
    print(f"default pipeline `{spec_name}`, {args.limit} SciFact documents, {len(queries)} "
          "queries, sequential\n")
    print("| features | p50 ms | p95 ms | p50 vs off |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['feature']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p50_vs_off']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

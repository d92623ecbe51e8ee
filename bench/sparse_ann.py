"""The SEISMIC sparse stage against the exact `rank_features` stage, same weights, same run.

    python bench/sparse_ann.py --url http://127.0.0.1:9400 --docs 100000 [--queries 100] \
        [--threshold 10000] [--top-n 10,20,40] [--heap-factor 1.0,1.5] [--json]

The node needs neural-search >= 3.3 (`osneural opensearch start --plugins neural-search`).
Documents: SciFact's 5,183 documents encoded with the default sparse encoder; the rest up to
`--docs` resampled in weight space as `bench/scale.py` does: distractor i sums the weights of 3
real documents drawn at random (seeded by i) with Dirichlet(2) shares, cut to the dominant
parent's term count. One index holds them as `rank_features`, its `-sparse-ann` companion as a
SEISMIC `sparse_vector` (`--threshold` is `approximate_threshold`, below the force-merged segment
so SEISMIC answers). Measured over SciFact's test queries (model-encoded), one at a time after a
warm-up: p50 / p95 of the OpenSearch request, recall@k of SEISMIC's top k against the exact
stage's top k, recall@1000 of SciFact's relevant documents for both, and store bytes per document
of each index (the main one holds only the rank_features field here).

`--top-n` and `--heap-factor` (SEISMIC's query-time `method_parameters`: how many of the
query's highest-weight terms it walks, and how far it lets a cluster's summary score fall below
the heap's minimum before skipping it) are swept over the same companion: one row per pair, so
the recall each buys and its latency are read side by side. Empty values mean the method's own
defaults (top_n 10, heap_factor 1.0 on neural-search 3.6).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

INDEX = "osneural-sparse-ann-bench"


def corpus() -> tuple[list[str], list[dict[str, float]], list[dict[str, float]], list[set[str]]]:
    """SciFact's documents and test queries, encoded: (ids, weights, query weights, relevant)."""
    from osneural.eval.beir import load_qrels, load_queries
    from osneural.eval.benchkit import beir_dir, corpus_records, passage

    from osneural.encoders import load_default

    d = beir_dir("scifact")
    records = corpus_records(d)
    ids = [str(r["_id"]) for r in records]
    texts = [passage(r) for r in records]
    enc = load_default("sparse")
    real = [dict(w) for w in enc.encode_documents(texts)]
    qrels = load_qrels(d / "qrels" / "test.tsv")
    queries = load_queries(d / "queries.jsonl")
    qids = [q for q in queries if q in qrels]
    qw = [dict(w) for w in enc.encode_queries([queries[q] for q in qids])]
    rel = [{doc for doc, g in qrels[q].items() if g > 0} for q in qids]
    return ids, real, qw, rel


def distractor(real: list[dict[str, float]], i: int) -> dict[str, float]:
    """Distractor i: 3 real documents' weights (drawn with seed i) summed with Dirichlet(2)
    shares, cut to the dominant parent's term count. Made when it is written, so a million of
    them never sit in memory together."""
    rng = np.random.default_rng(1_000_003 + i)
    parents = rng.choice(len(real), 3, replace=False)
    w = rng.dirichlet([2.0, 2.0, 2.0])
    mix: dict[str, float] = {}
    for share, p in zip(w, parents, strict=True):
        for t, x in real[p].items():
            mix[t] = mix.get(t, 0.0) + float(share) * x
    keep = len(real[parents[int(np.argmax(w))]])
    return dict(sorted(mix.items(), key=lambda kv: -kv[1])[:keep])


def documents(ids: list[str], real: list[dict[str, float]], n_docs: int):
    """(id, weights) of the real documents, then distractors up to `n_docs`."""
    yield from zip(ids, real, strict=True)
    for i in range(max(0, n_docs - len(real))):
        yield f"x{i}", distractor(real, i)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(np.ceil(p / 100 * len(s))) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threshold", type=int, default=10_000)
    ap.add_argument("--top-n", default="", help="comma list of SEISMIC top_n values (default: the method's)")
    ap.add_argument("--heap-factor", default="",
                    help="comma list of SEISMIC heap_factor values (default: the method's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    top_ns = [int(x) for x in args.top_n.split(",") if x.strip()] or [None]
    heaps = [float(x) for x in args.heap_factor.split(",") if x.strip()] or [None]
    from opensearchpy import helpers
    from osneural.ingest.documents import sparse_features
    from osneural.ingest.sparse_ann import build_sparse_ann, sparse_vocab
    from osneural.mappings.sparse_ann import SeismicParams, companion_index
    from osneural.plugin.sparse_ann import seismic_query, token_ids
    from osneural.plugin.spec import SparseStage
    from osneural.plugin.stages import encode_body, sparse_query

    from osneural.connection import ClusterConfig
    from osneural.encoders import load_default

    ids, real, qw, rel = corpus()
    n_docs = max(args.docs, len(ids))
    qw, rel = qw[: args.queries], rel[: args.queries]
    client = ClusterConfig.from_values(args.url).client()
    client.transport.timeout = 900
    comp = companion_index(INDEX)
    client.indices.delete(index=[INDEX, comp], ignore_unavailable=True)
    client.indices.create(index=INDEX, body={
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0,
                               "refresh_interval": "-1"}},
        "mappings": {"properties": {"sparse": {"type": "rank_features"}}}})
    t0 = time.perf_counter()
    helpers.bulk(client, ({"_index": INDEX, "_id": i, "_source": {"sparse": sparse_features(w, doc_id=i)}}
                          for i, w in documents(ids, real, n_docs)), chunk_size=1000)
    client.indices.refresh(index=INDEX)
    client.indices.forcemerge(index=INDEX, max_num_segments=1, request_timeout=3600)
    bulk_s = time.perf_counter() - t0
    vocab = sparse_vocab(load_default("sparse"))
    ann = build_sparse_ann(client, INDEX, SeismicParams(approximate_threshold=args.threshold),
                           vocab=vocab)
    stage = SparseStage(k=args.k)

    def run(bodies: list[dict[str, Any]], index: str, size: int) -> tuple[list[list[str]], list[float]]:
        for b in bodies[:10]:
            client.search(index=index, body=encode_body({**b, "size": size}), filter_path="hits.hits._id")
        got, times = [], []
        for b in bodies:
            raw = encode_body({**b, "size": size, "_source": False, "track_total_hits": False})
            t = time.perf_counter()
            resp = client.search(index=index, body=raw, filter_path="hits.hits._id")
            times.append((time.perf_counter() - t) * 1000)
            got.append([h["_id"] for h in (resp.get("hits") or {}).get("hits", [])])
        return got, times

    exact_bodies = [{"query": sparse_query(stage, w)} for w in qw]
    ex, ex_t = run(exact_bodies, INDEX, args.k)

    def relevant_recall(got: list[list[str]]) -> float:
        """Mean share of each query's relevant documents among its hits."""
        return statistics.mean(len(set(g) & r) / len(r) for g, r in zip(got, rel, strict=True))

    size = {i: client.indices.stats(index=i, metric="store")["indices"][i]["total"]["store"]["size_in_bytes"]
            for i in (INDEX, comp)}
    rows = []
    for top_n in top_ns:
        for heap in heaps:
            ann_bodies = [{"query": seismic_query("sparse_ann", token_ids(w, vocab), args.k,
                                                  top_n=top_n, heap_factor=heap,
                                                  max_terms=stage.max_terms)} for w in qw]
            an, an_t = run(ann_bodies, comp, args.k)
            rows.append({
                "top_n": top_n, "heap_factor": heap,
                "p50_ms": round(pct(an_t, 50), 2), "p95_ms": round(pct(an_t, 95), 2),
                f"recall_at_{args.k}_vs_exact": round(statistics.mean(
                    len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(an, ex, strict=True)), 4),
                "recall_qrels": round(relevant_recall(an), 4),
                "p50_vs_exact": round(pct(an_t, 50) / pct(ex_t, 50), 2)})
    report = {"docs": n_docs, "queries": len(qw), "k": args.k,
              "approximate_threshold": args.threshold, "bulk_s": round(bulk_s, 1),
              "companion_build_s": round(ann.seconds, 1),
              "exact": {"p50_ms": round(pct(ex_t, 50), 2), "p95_ms": round(pct(ex_t, 95), 2),
                        "recall_qrels": round(relevant_recall(ex), 4),
                        "bytes_per_doc": round(size[INDEX] / n_docs, 1)},
              "seismic": rows[0] | {"bytes_per_doc": round(size[comp] / n_docs, 1)},
              "seismic_sweep": rows,
              "command": "python bench/sparse_ann.py " + " ".join(sys.argv[1:])}
    client.indices.delete(index=[INDEX, comp], ignore_unavailable=True)
    client.close()
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

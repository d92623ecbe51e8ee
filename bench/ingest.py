"""Ingestion benchmark on SciFact (BEIR layout): docs/s end to end and per stage, index size per
representation, and (with --analyzers) BM25 nDCG@10 of the english vs standard analyzer.

Reference measured in the same run: a text-only ingest of the same documents (BM25 fields only,
no encoders), so `ratio` says how much slower each configuration is than plain text indexing on
this machine. Sizes: one index per representation (text + that representation), force-merged to
one segment; the representation's size is its store size minus the text-only index's
(OpenSearch has no `_disk_usage` API: checked against 3.6, "no handler found"). Encoder outputs
are cached between those indexes, so only the first, full ingest pays for encoding.

    python bench/ingest.py --limit 500 [--json] [--analyzers] [--url http://127.0.0.1:9250]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from osneural.eval.benchkit import beir_dir, corpus_records

from osneural.paths import opensearch_url

DEFAULT_DATA = beir_dir("scifact")
REPS = ("dense", "sparse", "binary", "pq", "multivector")


class CachedEncoder:
    """Same contract as the wrapped encoder; repeats of a text cost a dict lookup."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.cache: dict[str, Any] = {}
        self.last_stats = None

    def encode_documents(self, texts: list[str]) -> Any:
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            out = self.inner.encode_documents(missing)
            self.cache.update(zip(missing, out, strict=True))
        self.last_stats = getattr(self.inner, "last_stats", None)
        rows = [self.cache[t] for t in texts]
        return np.stack(rows) if self.manifest.get("kind") == "dense" else rows

    def fit_idf(self, texts: list[str], use: bool = False) -> Any:
        return self.inner.fit_idf(texts, use=use)


def store_bytes(client: Any, index: str) -> int:
    client.indices.refresh(index=index)
    client.indices.forcemerge(index=index, max_num_segments=1, request_timeout=600)
    stats = client.indices.stats(index=index, metric="store")
    return int(stats["indices"][index]["primaries"]["store"]["size_in_bytes"])


def bm25_ndcg(client: Any, data: Path, analyzer: str, docs: list[dict[str, Any]]) -> float:
    """nDCG@10 of a multi_match BM25 over title+text, on SciFact test queries."""
    from opensearchpy.helpers import bulk
    from osneural.eval.beir import load_beir
    from osneural.mappings import compose_index_body
    from ranx import Qrels, Run, evaluate

    index = f"bench-bm25-{analyzer}"
    client.indices.delete(index=index, ignore_unavailable=True)
    body = compose_index_body(["text"], text_analyzer=analyzer)
    client.indices.create(index=index, body=body)
    bulk(client, ({"_index": index, "_id": d["_id"], "_source": {"title": d.get("title", ""),
                   "text": d["text"]}} for d in docs), request_timeout=300)
    client.indices.refresh(index=index)
    ids = {d["_id"] for d in docs}
    collection = load_beir(data, "test", check_corpus=False)
    # Only judgments the subset can satisfy count, so a --limit run still measures ranking.
    qrels = {q: kept for q, judged in collection.qrels.items()
             if (kept := {d: s for d, s in judged.items() if d in ids and s > 0})}
    queries = {q: t for q, t in collection.queries.items() if q in qrels}
    run: dict[str, dict[str, float]] = {}
    for qid, text in queries.items():
        hits = client.search(index=index, body={"size": 100, "_source": False, "query": {
            "multi_match": {"query": text, "fields": ["title", "text"]}}})["hits"]["hits"]
        run[qid] = {h["_id"]: float(h["_score"]) for h in hits} or {"__none__": 0.0}
    client.indices.delete(index=index)
    return float(evaluate(Qrels(qrels), Run(run), "ndcg@10"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None, help="first N documents only")
    ap.add_argument("--url", default=opensearch_url())
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-docs", type=int, default=2000)
    ap.add_argument("--analyzers", action="store_true", help="also compare BM25 analyzers (all docs)")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark indexes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from osneural.ingest.codec_store import delete_codecs
    from osneural.ingest.indexer import CodecParams, index_corpus

    from osneural.encoders import load_default

    if not (args.data / "corpus.jsonl").is_file():
        print(f"no SciFact corpus at {args.data}", file=sys.stderr)
        return 2
    client = OpenSearch(hosts=[args.url], timeout=300)
    docs = corpus_records(args.data, args.limit)
    encoders = {k: CachedEncoder(load_default(k)) for k in ("dense", "sparse", "multivector")}
    params = CodecParams(train_docs=args.train_docs)
    rows: list[dict[str, Any]] = []
    created: list[str] = []

    def ingest(name: str, reps: list[str]) -> dict[str, Any]:
        index = f"bench-ingest-{name}"
        client.indices.delete(index=index, ignore_unavailable=True)
        delete_codecs(client, index)
        created.append(index)
        t0 = time.perf_counter()
        s = index_corpus(client, docs, index, representations=reps, batch_size=args.batch_size,
                         encoders=encoders, progress=False, codec_params=params,
                         failure_report=Path(tempfile.gettempdir()) / f"{index}.failures.jsonl")
        wall = time.perf_counter() - t0
        return {"name": name, "docs": s.indexed, "failed": s.failed, "seconds": wall,
                "docs_per_s": s.indexed / wall if wall else 0.0, "stages": s.stage_seconds,
                "store_bytes": store_bytes(client, index)}

    try:
        text = ingest("text", ["text"])
        full = ingest("all", list(REPS))  # the only run that pays for encoding
        sizes = {r: ingest(r, [r]) for r in REPS}
    finally:
        if not args.keep:
            for index in created:
                client.indices.delete(index=index, ignore_unavailable=True)
                delete_codecs(client, index)
    st = full["stages"]
    encode = st["encode_dense"] + st["encode_sparse"] + st["encode_multivector"]
    rows = [
        {"run": "text only (reference)", "docs": text["docs"], "seconds": text["seconds"],
         "docs_per_s": text["docs_per_s"], "ratio_vs_reference": 1.0},
        {"run": "all representations", "docs": full["docs"], "seconds": full["seconds"],
         "docs_per_s": full["docs_per_s"],
         "ratio_vs_reference": text["docs_per_s"] / full["docs_per_s"] if full["docs_per_s"] else None},
    ]
    stage_rows = [{"stage": k, "seconds": v, "share": v / full["seconds"],
                   "docs_per_s": full["docs"] / v if v else None}
                  for k, v in st.items() if v > 0]
    stage_rows.append({"stage": "encode (all encoders)", "seconds": encode,
                       "share": encode / full["seconds"], "docs_per_s": full["docs"] / encode if encode else None})
    size_rows = [{"representation": "text (reference)", "store_bytes": text["store_bytes"],
                  "bytes_per_doc": text["store_bytes"] / max(text["docs"], 1)}]
    for r, s in sizes.items():
        extra = s["store_bytes"] - text["store_bytes"]
        size_rows.append({"representation": r, "store_bytes": extra,
                          "bytes_per_doc": extra / max(s["docs"], 1)})
    size_rows.append({"representation": "all (one index)", "store_bytes": full["store_bytes"],
                      "bytes_per_doc": full["store_bytes"] / max(full["docs"], 1)})
    result: dict[str, Any] = {"corpus": str(args.data), "limit": args.limit, "docs": full["docs"],
                              "throughput": rows, "stages": stage_rows, "sizes": size_rows}
    if args.analyzers:
        all_docs = corpus_records(args.data)
        result["bm25_ndcg@10"] = {a: bm25_ndcg(client, args.data, a, all_docs)
                                  for a in ("english", "standard")}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"SciFact ingest, {full['docs']} docs ({args.data})")
    print(f"{'run':<24}{'docs':>7}{'seconds':>10}{'docs/s':>10}{'x slower':>10}")
    for r in rows:
        print(f"{r['run']:<24}{r['docs']:>7}{r['seconds']:>10.1f}{r['docs_per_s']:>10.1f}"
              f"{r['ratio_vs_reference']:>10.1f}")
    print(f"\n{'stage (all representations)':<28}{'seconds':>9}{'share':>8}{'docs/s':>10}")
    for r in stage_rows:
        dps = f"{r['docs_per_s']:.1f}" if r["docs_per_s"] else "-"
        print(f"{r['stage']:<28}{r['seconds']:>9.2f}{r['share']:>8.0%}{dps:>10}")
    print(f"\n{'index size':<22}{'bytes':>12}{'bytes/doc':>11}")
    for r in size_rows:
        print(f"{r['representation']:<22}{r['store_bytes']:>12}{r['bytes_per_doc']:>11.0f}")
    if "bm25_ndcg@10" in result:
        print("\nBM25 nDCG@10 (SciFact test, all docs): "
              + ", ".join(f"{a} {v:.4f}" for a, v in result["bm25_ndcg@10"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

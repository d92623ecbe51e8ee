"""Fewer SPLADE terms per document: nDCG@10 of the sparse stage when documents keep their top k.

    python bench/sparse_terms.py [--dataset scifact] [--keep 256,128,96,64] [--queries 150]

Reads every document's stored SPLADE weights (`sparse`, from `_source`) of a `bench/quality.py`
index, cuts each document to its `k` largest weights, and scores the test queries' SPLADE
encodings by the exact sparse dot product over the whole index (what the `sparse` first stage's
rank_feature sum computes, without its ~9-bit value rounding). It prints nDCG@10 per k, the mean
terms per document, and the JSON bytes the weights take in `_source` (the rank_features postings
shrink about in proportion to the terms).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import beir_dir, sparse_dot_scores  # noqa: E402
from query import ndcg10  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--index", help="default: osneural-quality-<dataset>")
    ap.add_argument("--keep", default="256,128,96,64")
    ap.add_argument("--queries", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch, helpers
    from osneural.eval.beir import load_beir
    from osneural.ingest.documents import sparse_feature_name
    from osneural.encoders import load_default

    index = args.index or f"osneural-quality-{args.dataset}"
    client = OpenSearch(hosts=[args.url], timeout=600)
    ids, weights = [], []
    for hit in helpers.scan(client, index=index, query={"_source": ["sparse"]}, size=500):
        ids.append(hit["_id"])
        weights.append((hit.get("_source") or {}).get("sparse") or {})
    present = set(ids)
    collection = load_beir(beir_dir(args.dataset), "test", limit=args.queries)
    qrels = {q: {d: g for d, g in rel.items() if d in present} for q, rel in collection.qrels.items()}
    qrels = {q: rel for q, rel in qrels.items() if rel and q in collection.queries}
    queries = {q: t for q, t in collection.queries.items() if q in qrels}
    enc = load_default("sparse")
    qw = {q: {sparse_feature_name(t): float(w) for t, w in enc.encode_queries([text])[0].items()}
          for q, text in queries.items()}
    rows = []
    for k in (int(x) for x in args.keep.split(",")):
        kept = [dict(sorted(w.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for w in weights]
        terms = sum(len(w) for w in kept)
        json_bytes = sum(len(json.dumps(w)) for w in kept)
        scores = sparse_dot_scores(list(qw.values()), kept)
        run = {q: [ids[i] for i in np.argsort(-scores[n], kind="stable")[:10]]
               for n, q in enumerate(qw)}
        rows.append({"keep": k, "terms_per_doc": terms / len(ids),
                     "source_json_bytes_per_doc": json_bytes / len(ids), "ndcg@10": ndcg10(run, qrels)})
        r = rows[-1]
        print(f"top {k:4d}: {r['terms_per_doc']:6.1f} terms/doc, {r['source_json_bytes_per_doc']:6.0f} "
              f"JSON B/doc, nDCG@10 {r['ndcg@10']:.4f}", file=sys.stderr, flush=True)
    report = {"index": index, "documents": len(ids), "queries": len(qw), "rows": rows}
    print(json.dumps(report, indent=2) if args.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())

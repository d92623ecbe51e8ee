"""What int8 encoders cost in quality, on a whole BEIR corpus: documents and queries, dense and sparse.

    python bench/int8_quality.py [--dataset scifact] [--kinds dense,sparse] [--json]

bench/peer.py measures the speed of int8 document encoders on a few hundred documents, where
nDCG@10 moves by half a point from which documents were drawn; this script measures their
quality on the whole corpus. It reads every document's fp32 representation from a
`bench/quality.py` index (`dense` vectors, `sparse` weights), re-encodes every document with the
int8 variant of the default export (`quantize_int8`, the one `osneural export --quantize int8`
writes, made in a temporary copy so the shared model cache is left as it is), and scores the test
queries exactly (brute-force cosine / dot product, no HNSW, so rows differ in the encoder only):

* fp32 documents, fp32 queries (the reference, measured in the same run);
* int8 documents, fp32 queries (`osneural ingest` with int8 document encoders);
* fp32 documents, int8 queries (`OSNEURAL_QUERY_PRECISION=int8` on the query side);
* int8 documents, int8 queries.

With `--encode-fp32` the fp32 documents are encoded here too (no node, no quality index).
It also prints document-encoding docs/s of both precisions, measured one after the other here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from osneural.eval.benchkit import beir_dir, sparse_dot_scores, stored_dense


def _int8_copy(kind: str, workdir: Path) -> Path:
    from osneural.encoders.defaults import default_export_dir
    from osneural.encoders.export import quantize_int8

    src = default_export_dir(kind)
    folder = workdir / kind
    shutil.copytree(src, folder)
    quantize_int8(folder)
    return folder


def _corpus_texts(dataset: str, ids: list[str]) -> list[str]:
    """Each document's passage exactly as ingestion reads and joins it (title and body)."""
    from osneural.ingest.batch import joined_text
    from osneural.ingest.corpus import CorpusDocument, iter_corpus

    by_id = {d.id: joined_text(d) for d in iter_corpus(beir_dir(dataset) / "corpus.jsonl")
             if isinstance(d, CorpusDocument)}
    return [by_id[i] for i in ids]


def _corpus(dataset: str) -> tuple[list[str], list[str]]:
    """Every document's id and passage, in corpus order (for `--encode-fp32`)."""
    from osneural.ingest.batch import joined_text
    from osneural.ingest.corpus import CorpusDocument, iter_corpus

    docs = [d for d in iter_corpus(beir_dir(dataset) / "corpus.jsonl")
            if isinstance(d, CorpusDocument)]
    return [d.id for d in docs], [joined_text(d) for d in docs]


def _ndcg(qids: list[str], scores: np.ndarray, ids: list[str], qrels: dict) -> float:
    from osneural.eval.metrics import compute_metrics, ranked_run

    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    runs = {q: ranked_run([ids[i] for i in top[n]], q)[0] for n, q in enumerate(qids)}
    return float(compute_metrics(qrels, runs)[0]["ndcg@10"])


def _timed_docs(enc: Any, texts: list[str]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = enc.encode_documents(texts)
    return out, len(texts) / (time.perf_counter() - t)


def dense_rows(client: Any, index: str, dataset: str, collection: Any, folder: Path) -> dict:
    from osneural.encoders import load_default
    from osneural.encoders.runtime import load_encoder

    fp32, int8 = load_default("dense", precision="fp32"), load_encoder(folder, precision="int8")
    if client is None:  # --encode-fp32: the reference documents encoded here
        ids, texts = _corpus(dataset)
        docs = np.asarray(fp32.encode_documents(texts), np.float32)
    else:
        ids, docs = stored_dense(client, index)
        texts = _corpus_texts(dataset, ids)
    qids = list(collection.queries)
    qtexts = [collection.queries[q] for q in qids]
    q32 = np.asarray(fp32.encode_queries(qtexts), np.float32)
    q8 = np.asarray(int8.encode_queries(qtexts), np.float32)
    _, rate32 = _timed_docs(fp32, texts[:500])
    head, rate8 = _timed_docs(int8, texts[:500])  # both rates on the same 500 documents
    d8 = np.concatenate([np.asarray(head, np.float32),
                         np.asarray(int8.encode_documents(texts[500:]), np.float32).reshape(-1, docs.shape[1])])
    qr = collection.qrels
    return {"documents": len(ids), "queries": len(qids),
            "fp32_docs_fp32_queries": _ndcg(qids, q32 @ docs.T, ids, qr),
            "int8_docs_fp32_queries": _ndcg(qids, q32 @ d8.T, ids, qr),
            "fp32_docs_int8_queries": _ndcg(qids, q8 @ docs.T, ids, qr),
            "int8_docs_int8_queries": _ndcg(qids, q8 @ d8.T, ids, qr),
            "doc_cosine_mean": float(np.mean(np.sum(d8 * docs, axis=1))),
            "docs_per_s_fp32": rate32, "docs_per_s_int8": rate8}


def sparse_rows(client: Any, index: str, dataset: str, collection: Any, folder: Path) -> dict:
    from opensearchpy import helpers
    from osneural.ingest.documents import sparse_feature_name

    from osneural.encoders import load_default
    from osneural.encoders.runtime import load_encoder

    fp32, int8 = load_default("sparse", precision="fp32"), load_encoder(folder, precision="int8")

    def named(rows: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{sparse_feature_name(t): float(x) for t, x in r.items()} for r in rows]

    if client is None:  # --encode-fp32: the reference documents encoded here
        ids, texts = _corpus(dataset)
        stored = named(fp32.encode_documents(texts))
    else:
        ids, stored = [], []
        for hit in helpers.scan(client, index=index, query={"_source": ["sparse"]}, size=500):
            ids.append(hit["_id"])
            stored.append((hit.get("_source") or {}).get("sparse") or {})
        texts = _corpus_texts(dataset, ids)
    qids = list(collection.queries)
    qtexts = [collection.queries[q] for q in qids]

    q32, q8 = named(fp32.encode_queries(qtexts)), named(int8.encode_queries(qtexts))
    _, rate32 = _timed_docs(fp32, texts[:500])
    head, rate8 = _timed_docs(int8, texts[:500])  # both rates on the same 500 documents
    d8 = named(list(head) + list(int8.encode_documents(texts[500:])))
    qr = collection.qrels
    return {"documents": len(ids), "queries": len(qids),
            "fp32_docs_fp32_queries": _ndcg(qids, sparse_dot_scores(q32, stored), ids, qr),
            "int8_docs_fp32_queries": _ndcg(qids, sparse_dot_scores(q32, d8), ids, qr),
            "fp32_docs_int8_queries": _ndcg(qids, sparse_dot_scores(q8, stored), ids, qr),
            "int8_docs_int8_queries": _ndcg(qids, sparse_dot_scores(q8, d8), ids, qr),
            "docs_per_s_fp32": rate32, "docs_per_s_int8": rate8}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--index", help="default: osneural-quality-<dataset>")
    ap.add_argument("--kinds", default="dense,sparse")
    ap.add_argument("--encode-fp32", action="store_true",
                    help="encode the fp32 documents here instead of reading them from the "
                         "bench/quality.py index (no node needed; slower)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from osneural.eval.beir import load_beir

    from osneural.connection import ClusterConfig

    client = None if args.encode_fp32 else ClusterConfig.from_values(args.url, timeout=600).client()
    index = args.index or f"osneural-quality-{args.dataset}"
    collection = load_beir(beir_dir(args.dataset), "test")
    report: dict[str, Any] = {"dataset": args.dataset, "index": index, "kinds": {}}
    with tempfile.TemporaryDirectory(prefix="osneural-int8-") as tmp:
        for kind in args.kinds.split(","):
            folder = _int8_copy(kind, Path(tmp))
            rows = (dense_rows if kind == "dense" else sparse_rows)(
                client, index, args.dataset, collection, folder)
            report["kinds"][kind] = rows
            ref = rows["fp32_docs_fp32_queries"]
            print(f"{kind}: fp32 {ref:.4f}; int8 docs {rows['int8_docs_fp32_queries']:.4f}; "
                  f"int8 queries {rows['fp32_docs_int8_queries']:.4f}; both "
                  f"{rows['int8_docs_int8_queries']:.4f}; docs/s {rows['docs_per_s_fp32']:.1f} -> "
                  f"{rows['docs_per_s_int8']:.1f}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"\n{args.dataset}: {report['kinds'] and next(iter(report['kinds'].values()))['queries']} "
              "test queries, exact search\n")
        print("| encoder | fp32 docs + queries | int8 docs | int8 queries | int8 both | docs/s fp32 -> int8 |")
        print("|---|---:|---:|---:|---:|---:|")
        for kind, r in report["kinds"].items():
            ref = r["fp32_docs_fp32_queries"]
            cells = " | ".join(f"{r[k]:.4f} ({100 * (r[k] - ref):+.2f})" for k in
                               ("int8_docs_fp32_queries", "fp32_docs_int8_queries",
                                "int8_docs_int8_queries"))
            print(f"| {kind} | {ref:.4f} | {cells} | {r['docs_per_s_fp32']:.1f} -> "
                  f"{r['docs_per_s_int8']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

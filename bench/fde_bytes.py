"""The MUVERA FDE in fewer bytes: float32 against int8 (k-NN byte vectors) and a smaller sketch.

    python bench/fde_bytes.py [--dataset scifact] [--queries 150] [--variants float32,int8,int8-1024]

Reads every document's pooled float16 tokens from a `bench/quality.py` index (`float_tokens`),
encodes each document's FDE in each variant with `MuveraFDE` (int8: `calibrate_int8` on the first
2,000 documents, as ingestion would), and runs the `fde+maxsim` pipeline exactly (brute force,
no HNSW, so the comparison isolates the coding): the top 200 documents by FDE inner product,
re-ranked by MaxSim over the float16 tokens. It prints nDCG@10 of each variant, the overlap of
its top 200 with float32's, and bytes per document of the vector (dimensions x bytes per value).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import beir_dir  # noqa: E402
from query import ndcg10  # noqa: E402
from recode_index import stored_documents  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--index", help="default: osneural-quality-<dataset>")
    ap.add_argument("--queries", type=int, help="first N judged test queries")
    ap.add_argument("--variants", default="float32,int8,int8-1024")
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from osneural.cython_ext import maxsim
    from osneural.eval.beir import load_beir
    from osneural.codecs import MuveraFDE
    from osneural.encoders import load_default

    index = args.index or f"osneural-quality-{args.dataset}"
    client = OpenSearch(hosts=[args.url], timeout=600)
    dim = int(client.indices.get_mapping(index=index)[index]["mappings"]["properties"]["dense"]["dimension"])
    ids, tokens = [], []
    for d in stored_documents(client, index, dim):
        if d["tokens"] is not None:
            ids.append(d["id"])
            tokens.append(d["tokens"].astype(np.float16))
    present = set(ids)
    collection = load_beir(beir_dir(args.dataset), "test", limit=args.queries)
    qrels = {q: {d: g for d, g in rel.items() if d in present} for q, rel in collection.qrels.items()}
    qrels = {q: rel for q, rel in qrels.items() if rel and q in collection.queries}
    queries = {q: t for q, t in collection.queries.items() if q in qrels}
    mv = load_default("multivector")
    qtok = {q: mv.encode_queries([t])[0] for q, t in queries.items()}
    print(f"{index}: {len(ids)} documents, {len(queries)} queries with a judged document present",
          file=sys.stderr, flush=True)

    def fde_of(variant: str) -> MuveraFDE:
        kind, _, width = variant.partition("-")
        fde = MuveraFDE(dim=dim, final_dim=int(width) if width else None, seed=0)
        if kind == "int8":
            fde.calibrate_int8([t.astype(np.float32) for t in tokens[:2000]])
        return fde

    rows, tops = [], {}
    for variant in args.variants.split(","):
        fde = fde_of(variant)
        docs = np.stack([fde.encode_document(t.astype(np.float32)) for t in tokens])
        run, top_sets = {}, {}
        for q, qt in qtok.items():
            s = docs @ fde.encode_query(qt)
            top = np.argsort(-s, kind="stable")[: args.k]
            rows_t = [tokens[i].astype(np.float32) for i in top]
            offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows_t])]).astype(np.int64)
            ms = np.asarray(maxsim(qt.astype(np.float32), np.concatenate(rows_t), offsets))
            run[q] = [ids[top[i]] for i in np.argsort(-ms, kind="stable")[:10]]
            top_sets[q] = set(top.tolist())
        tops[variant] = top_sets
        base = tops[args.variants.split(",")[0]]
        overlap = float(np.mean([len(top_sets[q] & base[q]) / args.k for q in qtok]))
        width = fde.fde_dim * (1 if fde.dtype == "int8" else 4)
        rows.append({"variant": variant, "fde_dim": fde.fde_dim, "bytes_per_doc": width,
                     "ndcg@10": ndcg10(run, qrels), "top_overlap_with_first": overlap,
                     "int8_scale": fde.int8_scale})
        print(f"{variant:<12} {fde.fde_dim:5d} dims {width:6d} B/doc  nDCG@10 "
              f"{rows[-1]['ndcg@10']:.4f}  top-{args.k} overlap {overlap:.3f}", file=sys.stderr,
              flush=True)
    report = {"index": index, "documents": len(ids), "queries": len(qtok), "rows": rows}
    print(json.dumps(report, indent=2) if args.json else
          "\n".join(f"{r['variant']:<12} {r['bytes_per_doc']:6d} B/doc  nDCG@10 {r['ndcg@10']:.4f}  "
                    f"overlap {r['top_overlap_with_first']:.3f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fewer bytes per document for the MaxSim tokens: pooling factor x token code, against float.

    python bench/token_codes.py [--dataset scifact] [--pool 1,1.5,2] [--codes pq192,pq64,opq64,rpq48]

Reads an index built by `bench/quality.py` (it needs the `float_tokens` representation, the pooled
float16 tokens). For each test query it takes the hybrid's fused top 100 (bm25 + dense + sparse,
rrf) once, then scores those candidates with MaxSim over each variant of the same tokens:
pooled again by `--pool` (the stored tokens are pooled by 2 at ingestion, so 1.5 means about 3
overall) and coded by each of `--codes`:

* `pqM`: product quantization, M sub-spaces of 8 bits (today: pq192, 2-d sub-spaces);
* `opqM`: the same after a learned rotation (faiss OPQ), so sub-spaces carry balanced variance;
* `rpqM`: residual PQ, a 2-byte coarse centroid (k-means, `--coarse` centroids, 1,024 by default) plus PQ of the
  residual (M + 2 bytes per token), the PLAID / RepCONC-style layout;
* `f16`: float16 (the reference: today's `float_tokens`, 768 bytes per 384-d token).

Codebooks train on 50,000 tokens drawn from the candidates, as `bench/maxsim_pq.py` does. It
reports bytes per document (tokens x bytes per token, averaged over the corpus sample), nDCG@10
of MaxSim alone and blended into the fused ranking (linear 0.2, as the `hybrid` spec), each
against float16 tokens at today's pooling (the row the quality table's float twins measure).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import beir_dir  # noqa: E402
from maxsim_pq import FUSED, rankings  # noqa: E402
from query import ndcg10, stored_float_tokens  # noqa: E402


class Coder:
    """One token code: fit on a sample, then encode+decode (what MaxSim over the codes sees)."""

    def __init__(self, name: str, seed: int = 0, coarse: int = 1024) -> None:
        self.name = name
        self.seed = seed
        self.coarse = coarse
        if name == "f16":
            self.kind, self.m = "f16", 0
        else:
            self.kind = name.rstrip("0123456789")
            self.m = int(name[len(self.kind):])
        if self.kind not in ("f16", "pq", "opq", "rpq"):
            raise ValueError(f"unknown code {name!r}: use f16, pqM, opqM or rpqM")

    def bytes_per_token(self, dim: int) -> int:
        return {"f16": 2 * dim, "pq": self.m, "opq": self.m, "rpq": self.m + 2}[self.kind]

    def fit(self, x: np.ndarray) -> Coder:
        import faiss
        from osneural.codecs.pq import ProductQuantizer

        d = x.shape[1]
        if self.kind == "f16":
            return self
        self.rot = None
        if self.kind == "opq":
            opq = faiss.OPQMatrix(d, self.m)
            opq.niter = 8
            opq.train(np.ascontiguousarray(x, dtype=np.float32))
            self.rot = faiss.vector_to_array(opq.A).reshape(d, d).astype(np.float32)
            x = x @ self.rot.T
        self.centroids = None
        if self.kind == "rpq":
            km = faiss.Kmeans(d, self.coarse, niter=10, seed=self.seed)
            km.train(np.ascontiguousarray(x, dtype=np.float32))
            self.centroids = km.centroids.astype(np.float32)
            self.index = faiss.IndexFlatL2(d)
            self.index.add(self.centroids)
            x = x - self.centroids[self.index.search(x, 1)[1][:, 0]]
        self.pq = ProductQuantizer(self.m, seed=self.seed).fit(x)
        return self

    def roundtrip(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "f16":
            return x.astype(np.float16).astype(np.float32)
        if self.rot is not None:
            x = x @ self.rot.T
        base = 0.0
        if self.centroids is not None:
            base = self.centroids[self.index.search(np.ascontiguousarray(x), 1)[1][:, 0]]
            x = x - base
        y = self.pq.decode(self.pq.encode(x)) + base
        return y @ self.rot if self.rot is not None else y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--index", help="default: osneural-quality-<dataset>")
    ap.add_argument("--pool", default="1,1.5,2", help="extra pooling factors over the stored tokens")
    ap.add_argument("--codes", default="f16,pq192,pq96,opq96,pq64,opq64,rpq64,opq48,rpq48,rpq32")
    ap.add_argument("--train-tokens", type=int, default=50_000)
    ap.add_argument("--coarse", type=int, default=1024, help="rpq coarse centroids")
    ap.add_argument("--queries", type=int, help="first N judged test queries only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from osneural.eval.beir import load_beir
    from osneural.codecs import pool_tokens
    from osneural.plugin import Searcher

    index = args.index or f"osneural-quality-{args.dataset}"
    collection = load_beir(beir_dir(args.dataset), "test", limit=args.queries)
    qrels = {q: dict(d) for q, d in collection.qrels.items()}
    client = OpenSearch(hosts=[args.url], timeout=120)
    searcher = Searcher(client, index)
    fused = {q: [(h["_id"], h["_score"]) for h in searcher.search(t, FUSED)["hits"]["hits"]]
             for q, t in collection.queries.items()}
    mv = searcher.cache.encoders.get("multivector")
    qtok = {q: mv.encode_queries([t])[0] for q, t in collection.queries.items()}
    searcher.close()
    ids = sorted({d for cand in fused.values() for d, _ in cand})
    floats = dict(stored_float_tokens(client, index, ids, batch=64))
    dim = next(iter(floats.values())).shape[1]
    ref_alone, ref_blend = (ndcg10(r, qrels) for r in rankings(fused, qtok, floats))
    rows: list[dict[str, Any]] = []
    for pool in (float(p) for p in args.pool.split(",")):
        toks = floats if pool <= 1 else {d: pool_tokens(t, pool) for d, t in floats.items()}
        flat = np.concatenate([toks[d] for d in ids])
        tokens_per_doc = len(flat) / len(ids)
        rng = np.random.default_rng(0)
        sample = flat[rng.choice(len(flat), min(args.train_tokens, len(flat)), replace=False)]
        for name in args.codes.split(","):
            t0 = time.perf_counter()
            coder = Coder(name.strip(), coarse=args.coarse).fit(sample)
            coded = {d: coder.roundtrip(t) for d, t in toks.items()}
            alone, blend = (ndcg10(r, qrels) for r in rankings(fused, qtok, coded))
            err = float(np.mean(np.sum((np.concatenate([coded[d] for d in ids[:500]])
                                        - np.concatenate([toks[d] for d in ids[:500]])) ** 2, 1)))
            bpt = coder.bytes_per_token(dim)
            rows.append({"pool": pool, "overall_pool": 2 * pool, "code": name,
                         "tokens_per_doc": tokens_per_doc, "bytes_per_token": bpt,
                         "bytes_per_doc": tokens_per_doc * bpt, "sq_error": err,
                         "alone": alone, "blend": blend, "d_alone": alone - ref_alone,
                         "d_blend": blend - ref_blend, "seconds": time.perf_counter() - t0})
            r = rows[-1]
            print(f"pool {pool:>4} {name:<7} {r['tokens_per_doc']:6.1f} tok {bpt:4d} B/tok "
                  f"{r['bytes_per_doc']:8.0f} B/doc  err {err:.4f}  alone {alone:.4f} "
                  f"({r['d_alone']:+.4f})  blend {blend:.4f} ({r['d_blend']:+.4f})",
                  file=sys.stderr, flush=True)
    report = {"index": index, "queries": len(fused), "candidates": len(ids),
              "reference": {"alone": ref_alone, "blend": ref_blend}, "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{index}: {len(fused)} queries, {len(ids)} candidates; float16 at the stored pooling:"
              f" alone {ref_alone:.4f}, blend {ref_blend:.4f}")
        print(f"{'pool':>5} {'code':<7} {'tok/doc':>7} {'B/tok':>5} {'B/doc':>7} "
              f"{'alone':>7} {'Δ':>7} {'blend':>7} {'Δ':>7}")
        for r in rows:
            print(f"{r['overall_pool']:>5.1f} {r['code']:<7} {r['tokens_per_doc']:7.1f} "
                  f"{r['bytes_per_token']:5d} {r['bytes_per_doc']:7.0f} {r['alone']:7.4f} "
                  f"{r['d_alone']:+7.4f} {r['blend']:7.4f} {r['d_blend']:+7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

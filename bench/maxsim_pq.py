"""PQ-coded MaxSim against float MaxSim: nDCG@10 for several M, several codebook draws each.

    python bench/maxsim_pq.py [--dataset scifact] [--m 48,96,192] [--draws 3] [--json]

Reads an index built by `bench/quality.py` (it needs the `float_tokens` representation). For each
test query, takes the hybrid's fused top 100 (bm25 + dense + sparse, rrf), fetches those
documents' float16 token copies from the index and scores them with MaxSim: once over the float
tokens, then, for each M, over the same tokens PQ-coded with codebooks trained on `--train-tokens`
tokens drawn at random from the candidates (one draw per seed). It reports nDCG@10 of MaxSim
alone and of MaxSim blended into the fused ranking (linear, weight 0.2, as `hybrid`), with each
draw's difference to float. The spread across draws is the point: how far a codebook's luck
moves the ranking decides which M can promise "within 0.5 point of float".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import beir_dir  # noqa: E402
from query import ndcg10, stored_float_tokens  # noqa: E402

_BM25 = {"type": "bm25", "k": 100, "fields": ["title^1.2", "text"]}
FUSED = {"first_stages": [_BM25, {"type": "dense", "k": 100, "num_candidates": 200},
                          {"type": "sparse", "k": 100, "mode": "model"}],
         "fusion": {"type": "rrf", "rank_constant": 60}, "size": 100, "_source": False}


def rankings(fused, qtok, tokens) -> tuple[dict, dict]:
    """Top 10 by MaxSim alone and by MaxSim blended into the fused scores, per query."""
    from osneural.cython_ext import maxsim
    from osneural.plugin.rescoring import combine_scores

    alone, blend = {}, {}
    for q, cand in fused.items():
        ids = [d for d, _ in cand]
        rows = [tokens[d] for d in ids]
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        s = np.asarray(maxsim(qtok[q], np.concatenate(rows), offsets), dtype=np.float64)
        alone[q] = [ids[i] for i in np.argsort(-s, kind="stable")[:10]]
        mixed = combine_scores([sc for _, sc in cand], s, "linear", 0.2)
        blend[q] = [ids[i] for i in np.argsort(-mixed, kind="stable")[:10]]
    return alone, blend


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--index", help="default: osneural-quality-<dataset>")
    ap.add_argument("--m", default="48,96,192", help="comma list of PQ sub-quantizer counts")
    ap.add_argument("--draws", type=int, default=3, help="codebook training samples per M")
    ap.add_argument("--train-tokens", type=int, default=50_000)
    ap.add_argument("--queries", type=int, help="first N judged test queries only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from osneural.eval.beir import load_beir
    from osneural.codecs.pq import ProductQuantizer
    from osneural.plugin import Searcher

    index = args.index or f"osneural-quality-{args.dataset}"
    collection = load_beir(beir_dir(args.dataset), "test", limit=args.queries)
    qrels = {q: dict(d) for q, d in collection.qrels.items()}
    client = OpenSearch(hosts=[args.url], timeout=120)
    searcher = Searcher(client, index)
    if not searcher.cache.index(client, index).has_field("mv_f16"):
        ap.error(f"index {index!r} has no float16 tokens: build it with the float_tokens representation")
    fused = {q: [(h["_id"], h["_score"]) for h in searcher.search(t, FUSED)["hits"]["hits"]]
             for q, t in collection.queries.items()}
    mv = searcher.cache.encoders.get("multivector")
    qtok = {q: mv.encode_queries([t])[0] for q, t in collection.queries.items()}
    ids = sorted({d for cand in fused.values() for d, _ in cand})
    floats = dict(stored_float_tokens(client, index, ids, batch=64))
    flat = np.concatenate([floats[d] for d in ids])

    ref_alone, ref_blend = (ndcg10(r, qrels) for r in rankings(fused, qtok, floats))
    rows = [{"tokens": "float16", "M": None, "seed": None, "bytes_per_token": 2 * flat.shape[1],
             "alone": ref_alone, "blend": ref_blend}]
    for m in (int(x) for x in args.m.split(",")):
        for seed in range(args.draws):
            t0 = time.perf_counter()
            rng = np.random.default_rng(seed)
            sample = flat[rng.choice(len(flat), min(args.train_tokens, len(flat)), replace=False)]
            pq = ProductQuantizer(m, seed=seed).fit(sample)
            coded = {d: pq.decode(pq.encode(floats[d])) for d in ids}
            alone, blend = (ndcg10(r, qrels) for r in rankings(fused, qtok, coded))
            rows.append({"tokens": "pq", "M": m, "seed": seed, "bytes_per_token": m,
                         "rel_error": pq.reconstruction_error(flat[:20_000]),
                         "alone": alone, "blend": blend, "seconds": time.perf_counter() - t0})
    searcher.close()
    report = {"index": index, "queries": len(fused), "candidates": len(ids),
              "tokens": len(flat), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{index}: {len(fused)} queries, {len(ids)} candidate documents, {len(flat)} tokens")
    print(f"{'tokens':<8} {'M':>4} {'draw':>4} {'B/token':>7} {'rel err':>8} "
          f"{'alone':>7} {'Δ float':>8} {'blend':>7} {'Δ float':>8}")
    for r in rows:
        m = "" if r["M"] is None else r["M"]
        seed = "" if r["seed"] is None else r["seed"]
        err = f"{r['rel_error']:.4f}" if "rel_error" in r else ""
        print(f"{r['tokens']:<8} {m:>4} {seed:>4} {r['bytes_per_token']:>7} {err:>8} "
              f"{r['alone']:>7.4f} {r['alone'] - ref_alone:>+8.4f} "
              f"{r['blend']:>7.4f} {r['blend'] - ref_blend:>+8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

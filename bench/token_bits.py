"""Token codes at 1-2 bits per dimension against PQ and float16: bytes, nDCG@10, kernel time.

    python bench/token_bits.py [--datasets scifact,nfcorpus] [--pools 1,2] [--json]

Needs one index per dataset built with the first stages and the float16 token copies:

    osneural ingest <beir>/<dataset>/corpus.jsonl --index osneural-bits-<dataset> \\
        --representations dense,sparse,float_tokens

Per dataset, once (cached under `--cache`): every document's pooled float16 tokens (what the
default MultiVectorEncoder gives after ingestion's pooling by 2, read back from `mv_f16`), the
query tokens, and each test query's fused first-stage window: the `hybrid` spec
(plugin/specs/hybrid.json) without its rescoring stage, i.e. bm25 + dense + sparse, linear
fusion, top 100 with their fused scores, run through the `Searcher`.

Then per extra pooling factor (`--pools`; 2 pools the stored tokens again, about 4 overall) and
per code: train on `--train-tokens` tokens drawn at random across the whole corpus, code every
candidate's tokens, and score each query's 100 candidates with that code's compiled MaxSim
kernel (asymmetric: float query tokens). nDCG@10 is reported for MaxSim alone over the window and
for the blend the `hybrid` spec computes (linear, weight 0.2 of min-max scores, computed here from
the fused scores exactly as the spec's rescoring stage does), each against float16 tokens at
today's pooling. Kernel time is the median over the first `--timed-queries` queries of one
call on their 100 candidates, one thread (the wrapper's input checks included). Codes:

* `f16`: float16 tokens (768 B per 384-d token), the reference;
* `pq192`: today's default, PQ M=192 (2-d sub-spaces, 192 B);
* `opq48`, `opq64`: PQ after a learned rotation (faiss OPQ); the query is rotated instead of
  the documents, so the `maxsim_pq` kernel scores them unchanged;
* `bin1`: 1 bit per dimension, the sign (48 B), `bin1s` with a float16 per-token scale (50 B);
* `bin2p192`, `bin1p384`, ...: `p<N>` codes the tokens' N principal directions (a projection
  learned from the training sample; the query is projected too), N x bits / 8 bytes;
* `res1`, `res2`: ColBERTv2 layout, a uint16 coarse centroid id (`--centroids` k-means
  centroids) plus 1 or 2 bits of residual per dimension (50 / 98 B); `res1s`, `res2s` add a
  per-token scale.

Training time of each code is reported (`train_s`, single run, shared machine).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from osneural.eval.benchkit import beir_dir
from osneural.eval.metrics import ndcg_at_k

HYBRID = Path(__file__).resolve().parents[1] / "plugin" / "specs" / "hybrid.json"
CODES = "f16,pq192,opq48,opq64,bin1,bin1s,res1,res2,res1s,res2s"
KMEANS_NITER = 10  # coarse k-means iterations (faiss default 25; ColBERTv2 uses 20)


# -- data, cached ---------------------------------------------------------------------------------
def corpus_tokens(client: Any, index: str, cache: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, float16 tokens [T, D], offsets [N + 1]) of every document, read once from `mv_f16`."""
    path = cache / f"{index}.tokens.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return [str(i) for i in z["ids"]], z["tokens"], z["offsets"]
    from opensearchpy import helpers
    from osneural.plugin.rescoring import decode_doc_value

    props = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    dim = int(props["dense"]["dimension"])
    ids, blocks = [], []
    body = {"query": {"match_all": {}}, "_source": False, "docvalue_fields": ["mv_f16"]}
    for hit in helpers.scan(client, index=index, query=body, size=200, preserve_order=False):
        values = (hit.get("fields") or {}).get("mv_f16")
        if not values:
            continue
        ids.append(hit["_id"])
        blocks.append(np.frombuffer(decode_doc_value(values[0]), "<f2").reshape(-1, dim))
    order = np.argsort(ids)
    ids = [ids[i] for i in order]
    blocks = [blocks[i] for i in order]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    tokens = np.concatenate(blocks)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.array(ids), tokens=tokens, offsets=offsets)
    return ids, tokens, offsets


def fused_windows(client: Any, index: str, queries: dict[str, str], cache: Path,
                  window: int) -> tuple[dict[str, list[tuple[str, float]]], dict[str, np.ndarray]]:
    """Each query's fused first-stage window (the hybrid spec without rescoring) and its tokens."""
    path = cache / f"{index}.fused.json"
    qpath = cache / f"{index}.qtokens.npz"
    if path.exists() and qpath.exists():
        fused = {q: [(d, s) for d, s in c] for q, c in json.loads(path.read_text()).items()}
        z = np.load(qpath, allow_pickle=False)
        return fused, {q: z[q] for q in z.files}
    from osneural.plugin import Searcher

    spec = json.loads(HYBRID.read_text())
    spec.pop("rescore")
    spec["size"] = window
    spec["_source"] = False
    searcher = Searcher(client, index)
    try:
        fused = {q: [(h["_id"], float(h["_score"])) for h in searcher.search(t, spec)["hits"]["hits"]]
                 for q, t in queries.items()}
        mv = searcher.cache.encoders.get("multivector")
        qtok = {q: np.asarray(mv.encode_queries([t])[0], np.float32) for q, t in queries.items()}
    finally:
        searcher.close()
    path.write_text(json.dumps(fused))
    np.savez(qpath, **qtok)
    return fused, qtok


# -- codes ----------------------------------------------------------------------------------------
class Code:
    """One token code: fit on a sample, encode documents, score candidates with its kernel."""

    def __init__(self, name: str, dim: int, centroids: int, opq_niter: int = 20,
                 seed: int = 0) -> None:
        self.name, self.dim, self.seed, self.n_centroids = name, dim, seed, centroids
        self.opq_niter = opq_niter
        self.kind = "f16" if name == "f16" else re.sub(r"[0-9]+s?(p[0-9]+)?$", "", name)
        if self.kind not in ("f16", "pq", "opq", "bin", "res"):
            raise ValueError(f"unknown code {name!r}")

    def fit(self, sample: np.ndarray, coarse: dict[str, Any]) -> Code:
        """`coarse` caches the k-means centroids (and their training seconds) that every
        unprojected res code of one sample shares."""
        import faiss

        from osneural.codecs import ProductQuantizer
        from osneural.codecs.residual import ResidualCodec

        self.rot = None
        if self.kind in ("pq", "opq"):
            m = int(self.name[len(self.kind):])
            x = sample
            if self.kind == "opq":
                opq = faiss.OPQMatrix(self.dim, m)
                opq.niter = self.opq_niter
                opq.train(np.ascontiguousarray(sample))
                self.rot = faiss.vector_to_array(opq.A).reshape(self.dim, self.dim).astype(np.float32)
                x = sample @ self.rot.T
            self.codec = ProductQuantizer(m, seed=self.seed).fit(x)
        elif self.kind in ("bin", "res"):
            from osneural.ingest.plan import parse_token_code

            parsed = parse_token_code(self.name)
            n_centroids = self.n_centroids if self.kind == "res" else 0
            self.codec = ResidualCodec(parsed.nbits, n_centroids, scale=parsed.scale,
                                       seed=self.seed, niter=KMEANS_NITER, dims=parsed.dims)
            # A projected code (p<N>) clusters its own projected values: the shared quantizer
            # lives in the tokens' D dimensions, so it is shared only among unprojected codes.
            shared = n_centroids and parsed.dims is None
            if shared and "centroids" not in coarse:
                t0 = time.perf_counter()
                kmeans = faiss.Kmeans(self.dim, n_centroids, niter=KMEANS_NITER, seed=self.seed)
                kmeans.train(sample)
                coarse["centroids"], coarse["seconds"] = kmeans.centroids, time.perf_counter() - t0
            self.codec.fit(sample, coarse["centroids"] if shared else None)
        return self

    def bytes_per_token(self) -> int:
        if self.kind == "f16":
            return 2 * self.dim
        if self.kind in ("pq", "opq"):
            return self.codec.M
        return self.codec.row_bytes

    def encode(self, tokens: np.ndarray) -> Any:
        if self.kind == "f16":
            return tokens.astype(np.float16)
        if self.kind in ("pq", "opq"):
            x = tokens if self.rot is None else tokens @ self.rot.T
            return self.codec.encode(np.ascontiguousarray(x, np.float32))
        return self.codec.encode(tokens)

    def score(self, query: np.ndarray, stored: Any, offsets: np.ndarray,
              n_threads: int | None = None) -> np.ndarray:
        from osneural.cython_ext import maxsim, maxsim_pq

        if self.kind == "f16":
            return maxsim(query, stored, offsets, n_threads=n_threads)
        if self.kind in ("pq", "opq"):
            q = query if self.rot is None else query @ self.rot.T  # (Rq).(Rx) = q.x
            return maxsim_pq(q, stored, offsets, self.codec.codebooks, n_threads=n_threads)
        return self.codec.maxsim(query, stored, offsets, n_threads=n_threads)


def evaluate(code: Code, fused: dict, qtok: dict, docs: dict[str, np.ndarray],
             qrels: dict, timed: int) -> dict[str, float]:
    """nDCG@10 alone and blended, and the median kernel time per window of candidates on one
    thread over the first `timed` queries (quality is scored on every core)."""
    from osneural.plugin.rescoring import combine_scores

    coded = {d: code.encode(t) for d, t in docs.items()}
    alone, blend, times = [], [], []
    for n, (q, cand) in enumerate(fused.items()):
        ids = [d for d, _ in cand]
        parts = [coded[d] for d in ids]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        stored = np.concatenate(parts)
        s = np.asarray(code.score(qtok[q], stored, offsets), np.float64)
        if n < timed:
            t0 = time.perf_counter()
            code.score(qtok[q], stored, offsets, n_threads=1)
            times.append(time.perf_counter() - t0)
        alone.append(ndcg_at_k([ids[i] for i in np.argsort(-s, kind="stable")[:10]], qrels[q]))
        mixed = combine_scores([sc for _, sc in cand], s, "linear", 0.2)
        blend.append(ndcg_at_k([ids[i] for i in np.argsort(-mixed, kind="stable")[:10]], qrels[q]))
    return {"alone": float(np.mean(alone)), "blend": float(np.mean(blend)),
            "kernel_ms": 1000 * float(np.median(times))}


def run_dataset(client: Any, dataset: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from osneural.eval.beir import load_beir

    from osneural.codecs import pool_tokens

    index = f"{args.prefix}{dataset}"
    cache = Path(args.cache)
    collection = load_beir(beir_dir(dataset), "test", limit=args.queries)
    qrels = {q: dict(d) for q, d in collection.qrels.items()}
    queries = {q: t for q, t in collection.queries.items() if q in qrels}
    all_ids, tokens, offsets = corpus_tokens(client, index, cache)
    fused, qtok = fused_windows(client, index, queries, cache, args.window)
    fused = {q: c for q, c in fused.items() if c}
    query_tokens = {"fp32": qtok}
    for precision in args.query_precisions.split(","):
        if precision.strip() != "fp32":  # the cached tokens are the fp32 encoder's
            from osneural.encoders import load_default

            mv = load_default("multivector", precision=precision.strip())
            query_tokens[precision.strip()] = {
                q: np.asarray(mv.encode_queries([queries[q]])[0], np.float32) for q in qtok}
    dim = tokens.shape[1]
    position = {d: i for i, d in enumerate(all_ids)}
    cand = sorted({d for c in fused.values() for d, _ in c})
    rows: list[dict[str, Any]] = []
    reference: dict[str, float] | None = None
    for pool in (float(p) for p in args.pools.split(",")):
        t0 = time.perf_counter()
        if pool > 1:
            pooled = [pool_tokens(tokens[offsets[i]:offsets[i + 1]].astype(np.float32), pool)
                      for i in range(len(all_ids))]
            pooled_offsets = np.concatenate([[0], np.cumsum([len(p) for p in pooled])])
            flat = np.concatenate(pooled).astype(np.float32)
        else:
            flat, pooled_offsets = tokens.astype(np.float32), offsets
        pool_s = time.perf_counter() - t0
        # a document without tokens (no text) has no rows and scores 0.0, as in the index
        docs = {d: flat[pooled_offsets[position[d]]:pooled_offsets[position[d] + 1]]
                if d in position else flat[:0] for d in cand}
        rng = np.random.default_rng(0)
        sample = np.ascontiguousarray(
            flat[rng.choice(len(flat), min(args.train_tokens, len(flat)), replace=False)])
        tokens_per_doc = len(flat) / len(all_ids)
        coarse: dict[str, Any] = {}
        print(f"{dataset} pool x{pool:g}: {len(all_ids)} docs, {tokens_per_doc:.1f} tokens/doc, "
              f"{len(sample)} training tokens, {len(fused)} queries (pooling {pool_s:.0f} s)",
              file=sys.stderr, flush=True)
        for name in args.codes.split(","):
            t0 = time.perf_counter()
            had_coarse = "seconds" in coarse
            code = Code(name.strip(), dim, args.centroids, args.opq_niter).fit(sample, coarse)
            train_s = time.perf_counter() - t0
            if code.kind == "res" and had_coarse:
                train_s += coarse["seconds"]  # the shared k-means counts in every res code
            for precision, qt in query_tokens.items():
                r = evaluate(code, fused, qt, docs, qrels, args.timed_queries)
                if reference is None:  # the first row (f16, fp32 queries, today's pooling)
                    reference = dict(r)
                bpt = code.bytes_per_token()
                rows.append({"dataset": dataset, "pool": pool, "code": name,
                             "query_precision": precision, "bytes_per_token": bpt,
                             "tokens_per_doc": tokens_per_doc, "bytes_per_doc": bpt * tokens_per_doc,
                             "train_s": train_s, **r, "d_alone": r["alone"] - reference["alone"],
                             "d_blend": r["blend"] - reference["blend"]})
                x = rows[-1]
                print(f"{dataset:<9} x{pool:<3g} {name:<6} q:{precision:<4} {bpt:>4} B/tok "
                      f"{x['bytes_per_doc']:>7.0f} B/doc alone {x['alone']:.4f} ({x['d_alone']:+.4f}) "
                      f"blend {x['blend']:.4f} ({x['d_blend']:+.4f}) kernel {x['kernel_ms']:.2f} ms "
                      f"train {train_s:.1f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="OpenSearch URL (default: osneural's)")
    ap.add_argument("--datasets", default="scifact,nfcorpus")
    ap.add_argument("--prefix", default="osneural-bits-", help="index name = prefix + dataset")
    ap.add_argument("--pools", default="1,2", help="extra pooling factors over the stored tokens")
    ap.add_argument("--codes", default=CODES)
    ap.add_argument("--train-tokens", type=int, default=200_000)
    ap.add_argument("--centroids", type=int, default=2048, help="coarse centroids of res codes")
    ap.add_argument("--opq-niter", type=int, default=20, help="OPQ rotation iterations (faiss: 50)")
    ap.add_argument("--timed-queries", type=int, default=30,
                    help="queries whose kernel call is also timed on one thread")
    ap.add_argument("--query-precisions", default="fp32",
                    help="query token encoders to score with, e.g. fp32,int8 (int8: the export's "
                         "model.int8.onnx)")
    ap.add_argument("--window", type=int, default=100, help="candidates MaxSim rescores")
    ap.add_argument("--queries", type=int, help="first N judged test queries only")
    ap.add_argument("--cache", default="/work/cache-24", help="where tokens and windows are kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch

    from osneural.paths import opensearch_url

    client = OpenSearch(hosts=[args.url or opensearch_url()], timeout=300)
    rows = [r for ds in args.datasets.split(",") for r in run_dataset(client, ds.strip(), args)]
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return 0
    print(f"{'dataset':<9} {'pool':>4} {'code':<6} {'B/tok':>5} {'B/doc':>7} {'alone':>7} "
          f"{'Δ f16':>7} {'hybrid':>7} {'Δ f16':>7} {'ms/100':>7} {'train s':>7}")
    for r in rows:
        print(f"{r['dataset']:<9} x{r['pool']:<3g} {r['code']:<6} {r['bytes_per_token']:>5} "
              f"{r['bytes_per_doc']:>7.0f} {r['alone']:>7.4f} {r['d_alone']:>+7.4f} "
              f"{r['blend']:>7.4f} {r['d_blend']:>+7.4f} {r['kernel_ms']:>7.2f} {r['train_s']:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

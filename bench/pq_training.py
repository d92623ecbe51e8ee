"""Token PQ training: what its sample size and threading cost, and what they change in the codes.

    python bench/pq_training.py --docs 300 --subspaces 12 --rounds 2

Encodes the first `--docs` SciFact documents with the default multivector encoder (tokens pooled
by 2, as ingestion does), then trains `--subspaces` of the 192 token sub-spaces (2 dimensions,
256 centroids each; evenly spaced, so the timing scales to all 192 by 192 / subspaces) in
rounds, A B A B:

* `faiss-omp, 256/centroid`: the former training, sub-spaces one after the other, each k-means
  on faiss's OpenMP threads, up to 256 points per centroid (all of a 50,000-token sample);
* `threads, N/centroid`: `ProductQuantizer.fit` now, one single-threaded k-means per sub-space
  on a thread pool, up to `--points-per-centroid` points per centroid (default: the library's,
  256; with 64, faiss subsamples 16,384 of them, seeded).

For each: training seconds and the reconstruction MSE of every token in those sub-spaces.
With `--subspaces 192` it also gives the top-10 overlap of MaxSim over decoded tokens with exact
MaxSim over the float tokens, for `--queries` SciFact queries against the encoded documents.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from osneural.eval.benchkit import beir_dir


def legacy_fit(x: np.ndarray, m: int, niter: int = 25, seed: int = 0) -> np.ndarray:
    """The former `ProductQuantizer.fit`: sequential sub-spaces, faiss's OpenMP threads, faiss's
    default cap of 256 points per centroid."""
    import faiss

    dsub = x.shape[1] // m
    books = np.empty((m, 256, dsub), np.float32)
    for j in range(m):
        km = faiss.Kmeans(dsub, 256, niter=niter, seed=seed + j, verbose=False, min_points_per_centroid=1)
        km.train(np.ascontiguousarray(x[:, j * dsub:(j + 1) * dsub]))
        books[j] = km.centroids
    return books


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--subspaces", type=int, default=12, help="of the 192 token sub-spaces")
    ap.add_argument("--points-per-centroid", type=int, default=None,
                    help="cap of the new side (default: the library's MAX_POINTS_PER_CENTROID)")
    ap.add_argument("--max-tokens", type=int, default=50_000, help="training sample (ingestion's cap)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    from osneural.codecs import ProductQuantizer
    from osneural.codecs.pq import MAX_POINTS_PER_CENTROID

    args.points_per_centroid = args.points_per_centroid or MAX_POINTS_PER_CENTROID
    from osneural.codecs.pooling import pool_tokens
    from osneural.encoders import load_default

    root = beir_dir("scifact")
    with (root / "corpus.jsonl").open() as f:
        docs = [json.loads(line) for _, line in zip(range(args.docs), f, strict=False)]
    with (root / "queries.jsonl").open() as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(args.queries), f, strict=False)]
    enc = load_default("multivector")
    toks = [pool_tokens(t, 2) for t in enc.encode_documents(
        [(d.get("title", "") + " " + d["text"]).strip() for d in docs])]
    qv = enc.encode_queries(queries)
    flat = np.concatenate(toks).astype(np.float32)
    rng = np.random.default_rng(0)
    sample = flat if len(flat) <= args.max_tokens else flat[np.sort(rng.choice(len(flat), args.max_tokens, replace=False))]
    print(f"{len(docs)} documents, {len(flat)} tokens, training sample {len(sample)}", flush=True)
    offsets = np.cumsum([0] + [len(t) for t in toks])

    def maxsim(tokens: list[np.ndarray]) -> np.ndarray:
        return np.array([[float((q @ d.T).max(axis=1).sum()) for d in tokens] for q in qv])

    m = 192
    dsub = flat.shape[1] // m
    chosen = np.linspace(0, m - 1, args.subspaces).round().astype(int)
    cols = np.concatenate([np.arange(j * dsub, (j + 1) * dsub) for j in chosen])
    part, part_sample = flat[:, cols], np.ascontiguousarray(sample[:, cols])
    full = args.subspaces == m
    exact_top = np.argsort(-maxsim(toks), axis=1)[:, :10] if full else None
    results: dict[str, list[dict[str, float]]] = {}
    new_name = f"threads, {args.points_per_centroid}/centroid"
    for _ in range(args.rounds):
        for name in ("faiss-omp, 256/centroid", new_name):
            t0 = time.perf_counter()
            pq = ProductQuantizer(args.subspaces)
            if name.startswith("faiss"):
                pq.codebooks = legacy_fit(part_sample, args.subspaces)
            else:
                pq = ProductQuantizer(args.subspaces, max_points_per_centroid=args.points_per_centroid)
                pq.fit(part_sample)
            seconds = time.perf_counter() - t0
            dec = pq.decode(pq.encode(part))
            row = {"seconds": seconds, "mse": float(((dec - part) ** 2).sum(axis=1).mean())}
            if full:
                top = np.argsort(-maxsim([dec[offsets[i]:offsets[i + 1]] for i in range(len(toks))]),
                                 axis=1)[:, :10]
                row["overlap"] = float(np.mean([len(set(a) & set(b)) / 10
                                                for a, b in zip(top, exact_top, strict=True)]))
            results.setdefault(name, []).append(row)
            print(f"{name}: {json.dumps({k: round(v, 5) for k, v in row.items()})}, "
                  f"{seconds * m / args.subspaces:.0f}s scaled to 192 sub-spaces", flush=True)
    old, new = results["faiss-omp, 256/centroid"], results[new_name]
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(old, new, strict=True)]
    mse = [b["mse"] / a["mse"] for a, b in zip(old, new, strict=True)]
    print(f"speed-up per round (old / new seconds): {', '.join(f'{r:.2f}x' for r in ratios)}; "
          f"MSE new / old: {', '.join(f'{r:.4f}' for r in mse)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

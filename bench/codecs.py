"""Codecs: bytes per document, PQ error (with/without OPQ), encode speed, FDE and pooling quality.

    python bench/codecs.py [--quick] [--json]

Data are synthetic and seeded: "MiniLM-like" dense vectors are unit vectors with a shared
direction and a 1/sqrt(i) spectrum in a random basis (sentence embeddings are anisotropic like
this); token sets are unit vectors drawn around topic centres. Speed ratios are measured in the
same run against a reference on the same data (faiss's own PQ encoder, a float32 copy, the
Chamfer score computed exactly), so > 1 means ours is faster / smaller.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import faiss
import numpy as np
from osneural.eval.benchkit import best_time

from osneural.codecs import (
    BinaryQuantizer,
    MuveraFDE,
    ProductQuantizer,
    chamfer,
    code_tokens,
    pool_tokens,
)

DIM, DOC_TOKENS, Q_TOKENS = 384, 180, 32


def minilm_like(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    x = rng.standard_normal((n, dim)) / np.sqrt(np.arange(1, dim + 1)) @ basis + 0.6 * basis[0]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def token_sets(n_docs: int, n_queries: int, dim: int = DIM, seed: int = 1):
    rng = np.random.default_rng(seed)
    centers = minilm_like(600, dim, seed + 100)

    def draw(n: int, topics: np.ndarray) -> np.ndarray:
        t = centers[rng.choice(topics, n)] + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)
        return (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)

    doc_topics = [rng.choice(600, 24, replace=False) for _ in range(n_docs)]
    docs = [draw(DOC_TOKENS, t) for t in doc_topics]
    queries = []
    for _ in range(n_queries):
        src = doc_topics[rng.integers(n_docs)]
        queries.append(draw(Q_TOKENS, np.concatenate([rng.choice(src, 6), rng.choice(600, 2)])))
    return queries, docs


def fit_pq(M: int, x: np.ndarray, **kw) -> ProductQuantizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return ProductQuantizer(M, **kw).fit(x)


def run(quick: bool) -> dict:
    n_train = 4000 if quick else 12000
    n_docs = 60 if quick else 200
    results: dict = {"config": {"dim": DIM, "doc_tokens": DOC_TOKENS, "n_train": n_train}}
    train, test = minilm_like(n_train), minilm_like(2000, seed=5)
    queries, docs = token_sets(n_docs, 12 if quick else 24)
    flat_tokens = np.concatenate(docs)[:n_train]

    # -- trained codecs -------------------------------------------------------------------------
    binary = BinaryQuantizer().fit(train)
    binary2 = BinaryQuantizer(bits_per_dim=2).fit(train)
    pqs = {M: fit_pq(M, train, niter=10) for M in (16, 32, 48)}
    tok_pqs = {M: fit_pq(M, flat_tokens, niter=10) for M in (16, 32)}
    fde = MuveraFDE(DIM)

    # -- bytes per document -----------------------------------------------------------------
    one_doc = docs[0]
    pooled = {f: pool_tokens(one_doc, f) for f in (2, 3)}
    mih_terms = code_tokens(binary.encode(test[:1]), 24, n_bits=binary.n_bits)[0]
    dense_rows = [
        ("float32", test[0].nbytes),
        ("float16", test[0].astype(np.float16).nbytes),
        ("binary 1 bit/dim", binary.encode(test[:1]).nbytes),
        ("binary 2 bits/dim", binary2.encode(test[:1]).nbytes),
        ("MIH terms m=24 (term text)", sum(len(t) for t in mih_terms)),
        *[(f"PQ M={M}", pq.encode(test[:1]).nbytes) for M, pq in pqs.items()],
    ]
    token_rows = [
        ("float32", one_doc.nbytes),
        ("float16", one_doc.astype(np.float16).nbytes),
        *[(f"PQ M={M}", pq.encode(one_doc).nbytes) for M, pq in tok_pqs.items()],
        ("pooled x2 float32", pooled[2].nbytes),
        ("pooled x3 float32", pooled[3].nbytes),
        ("pooled x2 + PQ M=16", tok_pqs[16].encode(pooled[2]).nbytes),
        ("pooled x2 + PQ M=32", tok_pqs[32].encode(pooled[2]).nbytes),
        (f"MUVERA FDE float32 ({fde.fde_dim} d)", fde.encode_document(one_doc).nbytes),
    ]
    results["bytes_dense"] = {k: int(v) for k, v in dense_rows}
    results["bytes_tokens"] = {k: int(v) for k, v in token_rows}

    # -- PQ error, with and without OPQ ------------------------------------------------------
    pq_rows = {}
    for M in (16,):
        # OPQ is not part of the codec (it did not help); measured here so the decision can be
        # re-checked: faiss.OPQMatrix rotation, then our PQ on the rotated vectors.
        plain = pqs[M].reconstruction_error(test)
        start = time.perf_counter()
        opq_matrix = faiss.OPQMatrix(DIM, M)
        opq_matrix.niter = 25
        opq_matrix.train(train)
        rotate = faiss.vector_to_array(opq_matrix.A).reshape(DIM, DIM).T
        opq = fit_pq(M, train @ rotate, niter=10)
        opq_s = time.perf_counter() - start
        rotated = opq.reconstruction_error(test @ rotate)
        pq_rows[f"M={M}"] = {
            "mse": plain,
            "mse_opq": rotated,
            "opq_gain": plain / rotated,
            "opq_fit_s": opq_s,
        }
    for M in (32, 48):
        pq_rows[f"M={M}"] = {"mse": pqs[M].reconstruction_error(test)}
    results["pq_error"] = pq_rows

    # -- encode speed ------------------------------------------------------------------------
    many = minilm_like(20000, seed=7)
    ref = pqs[48].to_faiss()
    t_ours = best_time(lambda: pqs[48].encode(many))
    t_numpy = best_time(lambda: pqs[48].encode_numpy(many), repeat=1)
    t_faiss = best_time(lambda: ref.compute_codes(many))
    t_bin = best_time(lambda: binary.encode(many))
    t_copy = best_time(lambda: many.copy())
    codes = binary.encode(many)
    t_mih = best_time(lambda: code_tokens(codes, 24, n_bits=binary.n_bits), repeat=1)
    t_fde = best_time(lambda: fde.encode_documents(docs[:50]), repeat=1) / 50
    t_pool = best_time(lambda: [pool_tokens(d, 2) for d in docs[:20]], repeat=1) / 20
    t_chamfer = best_time(lambda: [chamfer(queries[0], d) for d in docs[:50]], repeat=1) / 50
    results["speed"] = {
        "pq48_encode_vec_per_s": len(many) / t_ours,
        "faiss_pq48_encode_vec_per_s": len(many) / t_faiss,
        "pq_x_faiss": t_faiss / t_ours,
        "pq48_numpy_encode_vec_per_s": len(many) / t_numpy,
        "binary_encode_vec_per_s": len(many) / t_bin,
        "binary_time_over_copy": t_bin / t_copy,
        "mih_terms_codes_per_s": len(many) / t_mih,
        "fde_document_ms": 1000 * t_fde,
        "pool_x2_document_ms": 1000 * t_pool,
        "chamfer_reference_ms": 1000 * t_chamfer,
    }

    # -- FDE quality -------------------------------------------------------------------------
    truth = np.array([[chamfer(q, d) for d in docs] for q in queries])
    fde_rows = {}
    for cfg in (
        {"k_sim": 4, "reps": 8, "d_proj": 16},
        {"k_sim": 3, "reps": 8, "d_proj": 32},
        {"k_sim": 5, "reps": 4, "d_proj": 16},
        {"k_sim": 5, "reps": 20, "d_proj": 32, "final_dim": 2048},
        {"k_sim": 4, "reps": 10, "d_proj": 64},
    ):
        codec = MuveraFDE(DIM, **cfg)
        est = codec.encode_queries(queries) @ codec.encode_documents(docs).T
        top1 = np.mean(
            [np.argmax(truth[i]) in np.argsort(-est[i])[:10] for i in range(len(queries))]
        )
        name = ",".join(f"{k}={v}" for k, v in cfg.items())
        fde_rows[name] = {
            "fde_dim": codec.fde_dim,
            "pearson": float(np.corrcoef(est.ravel(), truth.ravel())[0, 1]),
            "best_doc_in_top10": float(top1),
        }
    results["fde"] = fde_rows

    # -- pooling -----------------------------------------------------------------------------
    pool_rows = {}
    for factor in (2, 3):
        pooled_docs = [pool_tokens(d, factor) for d in docs]
        scores = np.array([[chamfer(q, p) for p in pooled_docs] for q in queries])
        rel = np.abs(scores - truth) / truth
        pool_rows[f"x{factor}"] = {
            "mean_rel_change": float(rel.mean()),
            "max_rel_change": float(rel.max()),
            "same_best_doc": float(np.mean(scores.argmax(1) == truth.argmax(1))),
            "tokens_kept": sum(len(p) for p in pooled_docs) / sum(len(d) for d in docs),
        }
    results["pooling"] = pool_rows
    return results


def print_tables(r: dict) -> None:
    print(f"\nBytes per document, {DIM}-d dense vector")
    for k, v in r["bytes_dense"].items():
        print(f"  {k:<34}{v:>9} B   x{r['bytes_dense']['float32'] / v:7.1f} smaller")
    print(f"\nBytes per document, {DOC_TOKENS} token vectors of {DIM} d")
    for k, v in r["bytes_tokens"].items():
        print(f"  {k:<34}{v:>9} B   x{r['bytes_tokens']['float32'] / v:7.1f} smaller")
    print("\nPQ reconstruction error (mean squared L2, unit vectors)")
    for k, v in r["pq_error"].items():
        extra = (
            f"   OPQ {v['mse_opq']:.4f} (x{v['opq_gain']:.3f}, fit {v['opq_fit_s']:.1f} s)"
            if "mse_opq" in v
            else ""
        )
        print(f"  {k:<8}{v['mse']:.4f}{extra}")
    s = r["speed"]
    print("\nSpeed")
    print(
        f"  PQ M=48 encode        {s['pq48_encode_vec_per_s']:>12,.0f} vec/s   "
        f"faiss {s['faiss_pq48_encode_vec_per_s']:,.0f} vec/s   x faiss {s['pq_x_faiss']:.2f}"
    )
    print(
        f"  binary encode         {s['binary_encode_vec_per_s']:>12,.0f} vec/s   "
        f"{s['binary_time_over_copy']:.1f}x the time of a float32 copy"
    )
    print(f"  MIH terms (m=24)      {s['mih_terms_codes_per_s']:>12,.0f} codes/s")
    print(
        f"  FDE per document      {s['fde_document_ms']:>12.2f} ms   "
        f"(exact Chamfer vs one query: {s['chamfer_reference_ms']:.2f} ms)"
    )
    print(f"  pool x2 per document  {s['pool_x2_document_ms']:>12.2f} ms")
    print("\nMUVERA FDE vs exact Chamfer")
    for k, v in r["fde"].items():
        print(
            f"  {k:<42} dim {v['fde_dim']:>6}  r {v['pearson']:.3f}  "
            f"best doc in top10 {v['best_doc_in_top10']:.2f}"
        )
    print("\nToken pooling vs exact MaxSim")
    for k, v in r["pooling"].items():
        print(
            f"  {k}: mean rel. change {v['mean_rel_change']:.4f}  max {v['max_rel_change']:.4f}  "
            f"same best doc {v['same_best_doc']:.2f}  tokens kept {v['tokens_kept']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, for a smoke run")
    parser.add_argument("--threads", type=int, default=0, help="faiss threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print the same figures as JSON")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    results = run(args.quick)
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print_tables(results)


if __name__ == "__main__":
    main()

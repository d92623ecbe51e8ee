"""MaxSim kernel time of each token code against PQ M=192, measured alternately in one run.

    python bench/token_kernels.py [--rounds 200] [--json]

`bench/token_bits.py` times each code once per query, code after code, so a change in the
machine's load between codes shows up as a difference between them. Here every round calls
each code's kernel once, in a new random order, on the same 100 candidates (one thread, the
wrappers' input checks included), and the table gives each code's median and its ratio to PQ
M=192's median (the default before bit codes) -- a ratio below 1 is faster than PQ. The tokens
are random 384-d unit vectors (the kernels' work does not depend on the values): `--docs`
candidates of `--doc-tokens` tokens each (about what today's pooling leaves on SciFact and
NFCorpus) and `--query-tokens` query tokens. Each kernel's scores are first checked against
numpy MaxSim over the code's decoded tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

CODES = "f16,pq192,bin1,bin2,bin2s,res2"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(name: str, dim: int, train: np.ndarray, tokens: np.ndarray, centroids: int):
    """(bytes per token, scorer(query, n_threads), decoded tokens) of one code."""
    from osneural.cython_ext import maxsim, maxsim_pq

    from osneural.codecs import ProductQuantizer
    from osneural.codecs.residual import ResidualCodec

    if name == "f16":
        f16 = tokens.astype(np.float16)
        return 2 * dim, lambda q, off, k: maxsim(q, f16, off, n_threads=k), f16.astype(np.float32)
    if name.startswith("pq"):
        pq = ProductQuantizer(int(name[2:]), niter=5).fit(train)
        codes = pq.encode(tokens)
        return (pq.M, lambda q, off, k: maxsim_pq(q, codes, off, pq.codebooks, n_threads=k),
                pq.decode(codes))
    kind, nbits, scale = name[:3], int(name[3]), name.endswith("s")
    codec = ResidualCodec(nbits, centroids if kind == "res" else 0, scale=scale, niter=5)
    rows = codec.fit(train).encode(tokens)
    return (codec.row_bytes, lambda q, off, k: codec.maxsim(q, rows, off, n_threads=k),
            codec.decode(rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codes", default=CODES)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--docs", type=int, default=100, help="candidates per call")
    ap.add_argument("--doc-tokens", type=int, default=106)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--centroids", type=int, default=1024, help="coarse centroids of res codes")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    dim = args.dim
    train = unit(rng.standard_normal((20_000, dim)))
    tokens = unit(rng.standard_normal((args.docs * args.doc_tokens, dim)))
    offsets = np.arange(args.docs + 1, dtype=np.int64) * args.doc_tokens
    query = unit(rng.standard_normal((args.query_tokens, dim)))
    names = [c.strip() for c in args.codes.split(",")]
    codes = {}
    for name in names:
        bpt, score, decoded = build(name, dim, train, tokens, args.centroids)
        want = np.array([(query @ decoded[a:b].T).max(axis=1).sum()
                         for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
        got = np.asarray(score(query, offsets, 1), np.float64)
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            raise AssertionError(f"{name}: kernel scores differ from numpy over decoded tokens")
        codes[name] = (bpt, score)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in rng.permutation(names):
            score = codes[name][1]
            t0 = time.perf_counter()
            score(query, offsets, 1)
            times[name].append(time.perf_counter() - t0)
    ref = "pq192" if "pq192" in names else names[0]
    ref_ms = 1000 * float(np.median(times[ref]))
    rows = [{"code": n, "bytes_per_token": codes[n][0],
             "median_ms": 1000 * float(np.median(times[n])),
             "ratio_to_" + ref: 1000 * float(np.median(times[n])) / ref_ms} for n in names]
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return 0
    print(f"{args.docs} candidates x {args.doc_tokens} tokens, {args.query_tokens} query tokens, "
          f"D={dim}, one thread, {args.rounds} alternating rounds")
    print(f"{'code':<7} {'B/tok':>5} {'median ms':>9} {'x ' + ref:>9}")
    for r in rows:
        print(f"{r['code']:<7} {r['bytes_per_token']:>5} {r['median_ms']:>9.2f} "
              f"{r['ratio_to_' + ref]:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

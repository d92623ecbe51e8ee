"""Rescoring kernels against numpy, torch (CPU) and faiss-cpu, all in one run on the same data.

    python bench/rescoring.py [--quick] [--json]

Latencies are per query (median of repeated runs, after a warm-up). Ratios are baseline time over
ours, so > 1 means ours is faster: "x numpy"/"x other" use ours on all cores, "x np 1t"/"x oth 1t"
ours on one thread; "nt/1t" is our parallel speed-up. The numpy PQ-scan row is left out because
faiss is the reference there; Hamming has no "other". Baselines run with their libraries' default threading (numpy's
OpenBLAS and torch use every core, faiss parallelises over queries so one query is one thread);
ours is shown with 1 thread and with all cores. The single-thread sgemm rate is measured in a child
process with OPENBLAS_NUM_THREADS=1, because OpenBLAS fixes its thread count at import.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
from osneural.cython_ext import (
    hamming_distances,
    max_threads,
    maxsim,
    maxsim_pq,
    pq_adc,
    topk,
)
from osneural.cython_ext import reference as ref
from osneural.eval.benchkit import median_time as timeit

Q_TOKENS, DOC_TOKENS = 32, 180

_SGEMM_CHILD = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
best = min((lambda t0: (a @ a, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(7))
print(2 * 1024 ** 3 / best / 1e9)
"""


def single_thread_sgemm_gflops() -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _SGEMM_CHILD], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def numpy_maxsim(query: np.ndarray, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The best numpy formulation: one matmul over all candidate tokens, then reduceat."""
    sim = query @ tokens.T
    return np.maximum.reduceat(sim, offsets[:-1], axis=1).sum(axis=0)


def maxsim_rows(n_docs_list: list[int], dims: list[int], rng: np.random.Generator) -> list[dict]:
    rows = []
    for dim in dims:
        for n_docs in n_docs_list:
            rows += _maxsim_case(n_docs, dim, rng)
    return rows


def _maxsim_case(n_docs: int, dim: int, rng: np.random.Generator) -> list[dict]:
    import torch

    t = n_docs * DOC_TOKENS
    offsets = np.arange(n_docs + 1, dtype=np.int64) * DOC_TOKENS
    query = rng.standard_normal((Q_TOKENS, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    f32 = rng.standard_normal((t, dim)).astype(np.float32)
    f32 /= np.linalg.norm(f32, axis=1, keepdims=True)
    f16 = f32.astype(np.float16)
    scales = (np.abs(f32).max(axis=1) / 127).astype(np.float32)
    i8 = np.round(f32 / scales[:, None]).astype(np.int8)
    m = dim // 8
    codebooks = (rng.standard_normal((m, 256, 8)) / np.sqrt(dim)).astype(np.float32)
    codes = rng.integers(0, 256, size=(t, m)).astype(np.uint8)
    tq, tf32, tf16 = torch.from_numpy(query), torch.from_numpy(f32), torch.from_numpy(f16)
    ti8, tsc = torch.from_numpy(i8), torch.from_numpy(scales)
    tcb, tcodes = torch.from_numpy(codebooks), torch.from_numpy(codes.astype(np.int64))
    tm = torch.arange(m)[None, :]
    flops = 2.0 * Q_TOKENS * t * dim

    def torch_path(decode: Callable[[], torch.Tensor]) -> torch.Tensor:
        # Equal-length documents let torch use a reshape + amax, faster than any ragged reduce.
        with torch.no_grad():
            sim = tq @ decode().T
            return sim.view(Q_TOKENS, n_docs, DOC_TOKENS).amax(dim=2).sum(dim=0)

    def np_pq() -> np.ndarray:
        return numpy_maxsim(query, ref.pq_decode(codes, codebooks), offsets)

    def torch_pq() -> torch.Tensor:
        return torch_path(lambda: tcb[tm, tcodes].reshape(t, dim))

    cases = {
        "float32": (
            lambda k: maxsim(query, f32, offsets, n_threads=k),
            lambda: numpy_maxsim(query, f32, offsets),
            lambda: torch_path(lambda: tf32),
            ref.maxsim(query, f32, offsets),
        ),
        "float16": (
            lambda k: maxsim(query, f16, offsets, n_threads=k),
            lambda: numpy_maxsim(query, f16.astype(np.float32), offsets),
            lambda: torch_path(lambda: tf16.float()),
            ref.maxsim(query, f16, offsets),
        ),
        "int8": (
            lambda k: maxsim(query, i8, offsets, scales, n_threads=k),
            lambda: numpy_maxsim(query, i8.astype(np.float32) * scales[:, None], offsets),
            lambda: torch_path(lambda: ti8.float() * tsc[:, None]),
            ref.maxsim(query, i8, offsets, scales),
        ),
        f"pq M={m} lut": (
            lambda k: maxsim_pq(query, codes, offsets, codebooks, method="lut", n_threads=k),
            np_pq, torch_pq, ref.maxsim_pq(query, codes, offsets, codebooks),
        ),
        f"pq M={m} decode": (
            lambda k: maxsim_pq(query, codes, offsets, codebooks, method="decode", n_threads=k),
            np_pq, torch_pq, ref.maxsim_pq(query, codes, offsets, codebooks),
        ),
    }
    rows = []
    for storage, (ours, base, other, want) in cases.items():
        err = float(np.abs(ours(max_threads()) - want).max())
        if err > 1e-3:
            raise AssertionError(f"maxsim {storage} D={dim} N={n_docs}: error {err}")
        ours1 = timeit(lambda o=ours: o(1))
        oursn = timeit(lambda o=ours: o(max_threads()))
        rows.append(_row(f"maxsim {storage} D={dim} N={n_docs}", ours1, oursn, timeit(base),
                         "torch", timeit(other), gflops_1t=flops / ours1 / 1e9))
    return rows


def pq_scan_rows(n_codes: int, ms: list[int], rng: np.random.Generator) -> list[dict]:
    import faiss

    rows = []
    dim = 128
    train = rng.standard_normal((20_000, dim)).astype(np.float32)
    query = rng.standard_normal((1, dim)).astype(np.float32)
    for m in ms:
        index = faiss.IndexPQ(dim, m, 8)
        index.train(train)
        codes = rng.integers(0, 256, size=(n_codes, m)).astype(np.uint8)
        faiss.copy_array_to_vector(codes.ravel(), index.codes)
        index.ntotal = n_codes
        codebooks = faiss.vector_to_array(index.pq.centroids).reshape(m, 256, dim // m)

        def ours(k: int = 1, codebooks=codebooks, codes=codes) -> np.ndarray:
            # Negated squared-L2 table: highest total = nearest, so `topk` applies directly.
            lut = -ref.pq_lookup_table(query[0], codebooks, "l2")
            return topk(pq_adc(codes, lut, n_threads=k), 10)

        _, want = index.search(query, 10)
        got = ours(max_threads())
        if len(set(got.tolist()) & set(want[0].tolist())) < 9:
            raise AssertionError(f"pq scan M={m}: ours {got} vs faiss {want[0]}")
        rows.append(_row(f"pq scan top-10 M={m} N={n_codes:,}", timeit(ours),
                         timeit(lambda o=ours: o(max_threads())), None, "faiss IndexPQ",
                         timeit(lambda index=index: index.search(query, 10))))
    return rows


def hamming_rows(n_codes: int, rng: np.random.Generator) -> list[dict]:
    codes = rng.integers(0, 256, size=(n_codes, 32)).astype(np.uint8)
    query = rng.integers(0, 256, size=32).astype(np.uint8)
    if not np.array_equal(hamming_distances(query, codes), ref.hamming_distances(query, codes)):
        raise AssertionError("hamming mismatch")
    return [_row(f"hamming 256-bit N={n_codes:,}", timeit(lambda: hamming_distances(query, codes, n_threads=1)),
                 timeit(lambda: hamming_distances(query, codes)),
                 timeit(lambda: ref.hamming_distances(query, codes)), None, None)]


def _row(case: str, ours_1t: float, ours_nt: float, numpy_s: float | None, other_name: str | None,
         other_s: float | None, gflops_1t: float | None = None) -> dict:
    return {
        "case": case,
        "ours_1t_ms": ours_1t * 1e3,
        "ours_nt_ms": ours_nt * 1e3,
        "numpy_ms": None if numpy_s is None else numpy_s * 1e3,
        "other": other_name,
        "other_ms": None if other_s is None else other_s * 1e3,
        "vs_numpy": None if numpy_s is None else numpy_s / ours_nt,
        "vs_numpy_1t": None if numpy_s is None else numpy_s / ours_1t,
        "vs_other": None if other_s is None else other_s / ours_nt,
        "vs_other_1t": None if other_s is None else other_s / ours_1t,
        "scaling": ours_1t / ours_nt,
        "ours_gflops_1t": gflops_1t,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(result: dict) -> None:
    print(f"threads: {result['threads']}   single-thread sgemm (numpy/OpenBLAS, 1024^3): "
          f"{result['sgemm_gflops_1t']:.1f} GFLOP/s")
    head = (f"{'case':<36} {'ours 1t ms':>10} {'ours nt ms':>10} {'numpy ms':>9} {'other':>13} "
            f"{'other ms':>9} {'x numpy':>8} {'x np 1t':>8} {'x other':>8} {'x oth 1t':>8} {'nt/1t':>6} {'GF/s 1t':>8}")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(f"{r['case']:<36} {r['ours_1t_ms']:>10.3f} {r['ours_nt_ms']:>10.3f} "
              f"{_fmt(r['numpy_ms'], '9.3f'):>9} {r['other'] or '-':>13} {_fmt(r['other_ms'], '9.3f'):>9} "
              f"{_fmt(r['vs_numpy'], '8.2f'):>8} {_fmt(r['vs_numpy_1t'], '8.2f'):>8} "
              f"{_fmt(r['vs_other'], '8.2f'):>8} "
              f"{_fmt(r['vs_other_1t'], '8.2f'):>8} {r['scaling']:>6.2f} {_fmt(r['ours_gflops_1t'], '8.1f'):>8}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data (seconds, for CI)")
    parser.add_argument("--json", action="store_true", help="print the same figures as JSON")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n_scan = 100_000 if args.quick else 1_000_000
    rows = maxsim_rows([100] if args.quick else [100, 1000], [128] if args.quick else [128, 384], rng)
    rows += pq_scan_rows(n_scan, [16, 32], rng)
    rows += hamming_rows(n_scan, rng)
    result = {"threads": max_threads(), "sgemm_gflops_1t": single_thread_sgemm_gflops(), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result


if __name__ == "__main__":
    main()

"""What the default build's cheaper token path costs in quality: int8 token encoding and the
faster token PQ training, measured on the stored representation itself.

    python bench/build_quality.py --dataset scifact [--cache DIR] [--json]

A whole default build plus `bench/quality.py` on SciFact and NFCorpus takes longer than a shared
2-core machine allows, and most of its rows do not depend on the token path. This script measures
only what the token path changes, offline and exactly:

1. every document is encoded by the default multivector export twice, in fp32 and in int8 (the
   export's `model.int8.onnx`, made in a temporary copy by `quantize_int8` when missing), and its
   tokens pooled as ingestion pools them (`pool_tokens`, factor 2);
2. the test queries' tokens come from the fp32 encoder (the query side's default for this kind);
3. the candidates of each query are the top 100 documents of the fp32 pass's pooled vector (exact
   cosine): one fixed list, so rows differ in the token representation only;
4. per row, a token PQ (M=192) is trained as `train_codecs` trains it (tokens of the first
   `--train-docs` documents, `--max-train-tokens` drawn with seed 0), every document's tokens
   coded and MaxSim over the PQ codes reranks the candidates; nDCG@10 over the test qrels.
   `float` rows rerank with the uncoded tokens.

Rows: float fp32 / int8 tokens; PQ with the former training (25 k-means iterations, up to 256
points per centroid) and the current one (`CodecParams.token_pq_niter` and
`token_pq_points_per_centroid`, as `codec_training.token_pq` builds it), on fp32 and int8 tokens.
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
from osneural.eval.benchkit import beir_dir

#: the training the default used before (k-means iterations, points per centroid at most)
FORMER_TRAINING = (25, 256)


def _int8_folder(workdir: Path) -> Path:
    from osneural.encoders.defaults import default_export_dir
    from osneural.encoders.export import quantize_int8
    from osneural.encoders.manifest import INT8_MODEL_NAME

    src = default_export_dir("multivector")
    if (src / INT8_MODEL_NAME).is_file():
        return src
    folder = workdir / "multivector"
    shutil.copytree(src, folder)
    quantize_int8(folder)
    return folder


def _encode(enc: Any, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray, float]:
    from osneural.codecs import pool_tokens

    start = time.perf_counter()
    tokens, pooled = [], []
    for i in range(0, len(texts), 64):
        t, p = enc.encode_documents_and_pooled(texts[i : i + 64])
        tokens += [pool_tokens(x, 2) if len(x) else x for x in t]
        pooled.append(p)
    return tokens, np.concatenate(pooled), time.perf_counter() - start


def _corpus_tokens(dataset: str, cache: Path | None, limit: int | None) -> dict[str, Any]:
    from osneural.ingest.batch import joined_text
    from osneural.ingest.corpus import CorpusDocument, iter_corpus

    from osneural.encoders import load_default
    from osneural.encoders.runtime import load_encoder

    path = cache / f"{dataset}-{limit or 'all'}-tokens.npz" if cache else None
    if path is not None and path.is_file():
        data = np.load(path, allow_pickle=True)
        return {k: data[k] for k in data.files}
    docs = [d for d in iter_corpus(beir_dir(dataset) / "corpus.jsonl")
            if isinstance(d, CorpusDocument)][:limit]
    texts = [joined_text(d) for d in docs]
    out: dict[str, Any] = {"ids": np.array([d.id for d in docs])}
    with tempfile.TemporaryDirectory(prefix="osneural-mv-int8-") as tmp:
        encoders = {"fp32": load_default("multivector", precision="fp32"),
                    "int8": load_encoder(_int8_folder(Path(tmp)), precision="int8")}
        for name, enc in encoders.items():
            tokens, pooled, secs = _encode(enc, texts)
            out[f"{name}_tokens"] = np.concatenate(tokens)
            out[f"{name}_offsets"] = np.cumsum([0] + [len(t) for t in tokens])
            out[f"{name}_dense"] = pooled
            out[f"{name}_seconds"] = secs
            print(f"{dataset}: {name} tokens of {len(texts)} documents in {secs:.0f} s",
                  file=sys.stderr, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def _train_sample(tokens: np.ndarray, offsets: np.ndarray, train_docs: int, cap: int) -> np.ndarray:
    """The sample `train_codecs` draws: tokens of the first documents, `cap` drawn with seed 0."""
    flat = tokens[: offsets[min(train_docs, len(offsets) - 1)]]
    if len(flat) > cap:
        rng = np.random.default_rng(0)
        flat = flat[np.sort(rng.choice(len(flat), cap, replace=False))]
    return np.ascontiguousarray(flat, dtype=np.float32)


def _rerank_ndcg(qids: list[str], qtok: list[np.ndarray], cands: np.ndarray, ids: np.ndarray,
                 score: Any, qrels: dict) -> float:
    from osneural.eval.metrics import compute_metrics, ranked_run

    runs = {}
    for n, q in enumerate(qids):
        s = score(qtok[n], cands[n])
        order = cands[n][np.argsort(-s, kind="stable")]
        runs[q] = ranked_run([str(ids[i]) for i in order], q)[0]
    return float(compute_metrics(qrels, runs)[0]["ndcg@10"])


def measure(dataset: str, cache: Path | None, train_docs: int, max_train_tokens: int,
            top: int, limit: int | None = None, with_former: bool = True) -> dict[str, Any]:
    from osneural.cython_ext import maxsim, maxsim_pq
    from osneural.eval.beir import load_beir
    from osneural.ingest.codec_training import token_pq
    from osneural.ingest.plan import CodecParams

    from osneural.codecs import ProductQuantizer
    from osneural.encoders import load_default

    data = _corpus_tokens(dataset, cache, limit)
    ids = data["ids"]
    collection = load_beir(beir_dir(dataset), "test")
    qrels = collection.qrels
    if limit:  # the first documents only: queries with a relevant one among them
        kept = {str(i) for i in ids}
        qrels = {q: {d: g for d, g in rel.items() if d in kept} for q, rel in qrels.items()}
        qrels = {q: rel for q, rel in qrels.items() if any(g > 0 for g in rel.values())}
    qids = [q for q in collection.queries if q in qrels]
    qtexts = [collection.queries[q] for q in qids]
    qenc = load_default("multivector", precision="fp32")
    qtok = [np.ascontiguousarray(t, np.float32) for t in qenc.encode_queries(qtexts)]
    qdense = np.asarray(load_default("dense", precision="fp32").encode_queries(qtexts), np.float32)
    cands = np.argsort(-(qdense @ data["fp32_dense"].T), axis=1, kind="stable")[:, :top]

    def gather(tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        parts = [tokens[offsets[d] : offsets[d + 1]] for d in docs]
        return np.concatenate(parts), np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)

    rows: list[dict[str, Any]] = []
    for prec in ("fp32", "int8"):
        tokens, offsets = data[f"{prec}_tokens"], data[f"{prec}_offsets"]

        def float_score(q: np.ndarray, docs: np.ndarray, t=tokens, o=offsets) -> np.ndarray:
            flat, offs = gather(t, o, docs)
            return maxsim(q, flat, offs)

        rows.append({"tokens": prec, "codes": "float", "train_s": 0.0,
                     "ndcg10": _rerank_ndcg(qids, qtok, cands, ids, float_score, qrels)})
        sample = _train_sample(tokens, offsets, train_docs, max_train_tokens)
        niter, ppc = FORMER_TRAINING
        former = ProductQuantizer(192, seed=0, niter=niter, max_points_per_centroid=ppc)
        trainings = [("pq, former training", former)] if with_former else []
        trainings.append(("pq, current training", token_pq(sample.shape[1], CodecParams())))
        for label, pq in trainings:
            start = time.perf_counter()
            pq.fit(sample)
            train_s = time.perf_counter() - start
            codes = pq.encode(tokens)

            def pq_score(q: np.ndarray, docs: np.ndarray, c=codes, o=offsets, p=pq) -> np.ndarray:
                flat, offs = gather(c, o, docs)
                return maxsim_pq(q, flat, offs, p.codebooks)

            rows.append({"tokens": prec, "codes": label, "train_s": train_s,
                         "niter": pq.niter, "points_per_centroid": pq.max_points_per_centroid,
                         "train_tokens": len(sample), "ndcg10": _rerank_ndcg(
                             qids, qtok, cands, ids, pq_score, qrels)})
            print(f"{dataset}: {prec} {label}: nDCG@10 {rows[-1]['ndcg10']:.4f} "
                  f"(trained in {train_s:.1f} s)", file=sys.stderr, flush=True)
    return {"dataset": dataset, "documents": len(ids), "queries": len(qids), "candidates": top,
            "encode_seconds": {p: float(data[f"{p}_seconds"]) for p in ("fp32", "int8")},
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder for the encoded tokens (reused when present)")
    ap.add_argument("--train-docs", type=int, default=2000)
    ap.add_argument("--max-train-tokens", type=int, default=50_000)
    ap.add_argument("--docs", type=int, default=None,
                    help="the first N documents only, and the test queries with a relevant one "
                         "among them (default: the whole corpus)")
    ap.add_argument("--top", type=int, default=100, help="candidates per query (dense top-k)")
    ap.add_argument("--no-former", action="store_true",
                    help="skip the former training's rows (its k-means takes most of the run)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = measure(args.dataset, args.cache, args.train_docs, args.max_train_tokens, args.top,
                     args.docs, not args.no_former)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    ref = report["rows"][0]["ndcg10"]
    print(f"\n{args.dataset}: {report['documents']} documents, {report['queries']} test queries, "
          f"MaxSim over the dense top {args.top}\n")
    print("| tokens | codes | nDCG@10 | vs fp32 float | train s |")
    print("|---|---|---:|---:|---:|")
    for r in report["rows"]:
        print(f"| {r['tokens']} | {r['codes']} | {r['ndcg10']:.4f} | "
              f"{100 * (r['ndcg10'] - ref):+.2f} | {r['train_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

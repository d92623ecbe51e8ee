"""The binary-token (MIH) first stage against the dense first stage, lever by lever, in one run.

    python bench/binary_levers.py --url http://127.0.0.1:9400 --docs 100000 [--queries 300] [--json]
    python bench/binary_levers.py --offline --docs 100000 [--lsh 256x8,384x8,512x10] [--json]

Documents. SciFact's 5,183 documents are encoded with the default dense encoder; the rest up to
`--docs` are resampled in representation space the way `bench/scale.py` makes its distractors:
distractor i = normalize(sum_j w_j dense_j) over 3 real documents drawn at random (seeded by i),
w ~ Dirichlet(2). Binary codes come from the same `BinaryQuantizer` ingestion trains (1 bit a
dimension, fitted on the real documents), and MIH terms from `osneural.codecs.mih`, for several
substring counts m in one index (one keyword field per m, postings only: no doc values, no norms,
`index_options: docs`). What this leaves out: distractors are mixtures of real documents, so
they sit closer to the real ones than unrelated text would (the recall they cost is an upper
bound), and no text or other representation is stored (the index is smaller than a real one).

Measured per variant, over SciFact's test queries one at a time after one warm-up pass: p50 /
p95 of the OpenSearch request (client wall time), recall@1000 of SciFact's relevant documents
(qrels) among the stage's candidates, and recall of the exact dense top-10 among them (how much
the dense rescoring after it can recover). The dense k-NN stage (HNSW, Lucene, cosine) is the
reference, measured in the same run on the same index; ratios are against it.

`--offline` needs no node: it ranks the same documents in numpy exactly as each query would, and
reports the recall columns and the postings each query visits per indexed document (the work an
inverted index cannot skip: every posting of every query term). Beside today's MIH scoring (an
exact substring r+1 points, one within radius r 1 point) it measures bit-sampling LSH: L tables,
each a term of k code bits drawn at random (seeded), a document scored by the tables it shares
with the query; and exact Hamming ranking, the ceiling of any index over these codes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any

import numpy as np

INDEX = "osneural-binary-levers"


def _dense_corpus(n_docs: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    from osneural.eval.beir import load_qrels, load_queries
    from osneural.eval.benchkit import beir_dir, corpus_records, passage

    from osneural.encoders import load_default

    d = beir_dir("scifact")
    records = corpus_records(d)
    ids = [str(r["_id"]) for r in records]
    texts = [passage(r) for r in records]
    enc = load_default("dense")
    real = np.asarray(enc.encode_documents(texts), dtype=np.float32)
    qrels = load_qrels(d / "qrels" / "test.tsv")
    queries = load_queries(d / "queries.jsonl")
    qids = [q for q in queries if q in qrels]
    qv = np.asarray(enc.encode_queries([queries[q] for q in qids]), dtype=np.float32)
    extra = n_docs - len(ids)
    vecs = [real]
    if extra > 0:
        out = np.empty((extra, real.shape[1]), dtype=np.float32)
        for i in range(extra):
            rng = np.random.default_rng(seed * 1_000_003 + i)
            parents = rng.choice(len(real), 3, replace=False)
            w = rng.dirichlet([2.0, 2.0, 2.0])
            v = (w[:, None] * real[parents]).sum(0)
            out[i] = v / np.linalg.norm(v)
        vecs.append(out)
        ids += [f"x{i}" for i in range(extra)]
    return ids, np.concatenate(vecs), qv, {q: {d for d, g in qrels[q].items() if g > 0} for q in qids}


def build(client: Any, ids: list[str], dense: np.ndarray, bq: Any, ms: list[int]) -> None:
    from opensearchpy import helpers

    from osneural.codecs import mih

    codes = bq.encode(dense)
    props: dict[str, Any] = {"dense": {"type": "knn_vector", "dimension": dense.shape[1],
                                       "method": {"name": "hnsw", "engine": "lucene",
                                                  "space_type": "cosinesimil"}}}
    for m in ms:
        props[f"bt{m}"] = {"type": "keyword", "doc_values": False, "norms": False,
                           "index_options": "docs"}
    client.indices.delete(index=INDEX, ignore_unavailable=True)
    client.indices.create(index=INDEX, body={
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0,
                               "refresh_interval": "-1"}},
        "mappings": {"dynamic": "strict", "_source": {"enabled": False}, "properties": props}})
    terms = {m: mih.code_tokens(codes, m, n_bits=bq.n_bits) for m in ms}

    def actions():
        for i, doc_id in enumerate(ids):
            src = {"dense": dense[i].tolist()}
            for m in ms:
                src[f"bt{m}"] = terms[m][i]
            yield {"_index": INDEX, "_id": doc_id, "_source": src}

    helpers.bulk(client, actions(), chunk_size=1000, request_timeout=600)
    client.indices.refresh(index=INDEX)
    client.indices.forcemerge(index=INDEX, max_num_segments=1, request_timeout=3600)
    client.indices.refresh(index=INDEX)


def variants(ms: list[int]) -> list[dict[str, Any]]:
    """(name, m, radius, query form) of every lever measured."""
    out = []
    for m in ms:
        for radius in (0, 1):
            if radius == 1 and m < 32:
                continue  # 16+-bit substrings at radius 1 expand to 400+ terms of rare values
            for form in ("scored_should", "terms_filter", "plain_should"):
                if radius == 0 and form == "plain_should":
                    continue  # at radius 0 plain and boosted should are the same query
                if form == "terms_filter" and m > 32:
                    continue  # unranked: with short substrings nearly every document matches
                if form == "plain_should" and m != 64:
                    continue  # measured at 6k documents: within noise of scored_should
                out.append({"name": f"m{m}-r{radius}-{form}", "m": m, "radius": radius,
                            "form": form})
    return out


def binary_body(v: dict[str, Any], code: np.ndarray, bq: Any, k: int) -> dict[str, Any]:
    from osneural.codecs import mih

    field = f"bt{v['m']}"
    terms = mih.query_tokens(code, v["m"], v["radius"], n_bits=bq.n_bits)
    exact = set(mih.query_tokens(code, v["m"], 0, n_bits=bq.n_bits))
    if v["form"] == "scored_should":  # today's stage: exact substring r+1, near 1
        should = [{"constant_score": {"filter": {"term": {field: t}},
                                      "boost": float(v["radius"] + 1) if t in exact else 1.0}}
                  for t in dict.fromkeys(terms)]
        query = {"bool": {"should": should, "minimum_should_match": 1}}
    elif v["form"] == "plain_should":  # one point per matching substring, no exact bonus
        should = [{"constant_score": {"filter": {"term": {field: t}}}}
                  for t in dict.fromkeys(terms)]
        query = {"bool": {"should": should, "minimum_should_match": 1}}
    else:  # one terms filter: every document sharing a term, unranked (constant score)
        query = {"constant_score": {"filter": {"terms": {field: list(dict.fromkeys(terms))}}}}
    return {"size": k, "query": query, "_source": False, "track_total_hits": False}


def dense_body(vec: np.ndarray, k: int, ef: int) -> dict[str, Any]:
    return {"size": k, "_source": False, "track_total_hits": False,
            "query": {"knn": {"dense": {"vector": vec.tolist(), "k": k,
                                        "method_parameters": {"ef_search": ef}}}}}


def measure(client: Any, bodies: list[dict[str, Any]]) -> tuple[list[list[str]], list[float]]:
    from osneural.plugin.stages import encode_body

    for b in bodies[: min(20, len(bodies))]:  # warm-up
        client.search(index=INDEX, body=encode_body(b), filter_path="hits.hits._id")
    got, times = [], []
    for b in bodies:
        raw = encode_body(b)
        t0 = time.perf_counter()
        resp = client.search(index=INDEX, body=raw, filter_path="hits.hits._id")
        times.append((time.perf_counter() - t0) * 1000)
        got.append([h["_id"] for h in (resp.get("hits") or {}).get("hits", [])])
    return got, times


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def _keys(bits: np.ndarray, cols: Any) -> np.ndarray:
    """The integer each row's bits at `cols` spell, most significant first."""
    cols = np.asarray(cols)
    weights = np.left_shift(np.int64(1), np.arange(len(cols) - 1, -1, -1, dtype=np.int64))
    return bits[:, cols].astype(np.int64) @ weights


def offline(dense: np.ndarray, qv: np.ndarray, rel_idx: list[set[int]], bq: Any,
            mih_variants: list[tuple[int, int]], lsh_variants: list[tuple[int, int]],
            k: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Recall of each variant's top `k` and the postings per document each query visits."""
    n = len(dense)
    d_bits = np.unpackbits(bq.encode(dense), axis=1)[:, : bq.n_bits]
    q_bits = np.unpackbits(bq.encode(qv), axis=1)[:, : bq.n_bits]
    exact10 = [set(r.tolist()) for r in np.argsort(-(qv @ dense.T), axis=1)[:, :10]]
    rows = []

    def row(name: str, scores_of: Any, postings: Any, **extra: Any) -> None:
        rq, rn, visited = [], [], []
        for qi in range(len(qv)):
            s = scores_of(qi)
            top = np.argpartition(-s, min(k, n - 1))[:k]
            got = set(top[s[top] > 0].tolist())
            rq.append(len(got & rel_idx[qi]) / max(1, len(rel_idx[qi])))
            rn.append(len(got & exact10[qi]) / 10)
            visited.append(postings(qi))
        rows.append({"stage": name, "k": k, "recall_qrels": round(float(np.mean(rq)), 4),
                     "recall_dense_top10": round(float(np.mean(rn)), 4),
                     "postings_per_doc": round(float(np.mean(visited)) / n, 4), **extra})

    row("exact-hamming", lambda qi: bq.n_bits - (d_bits != q_bits[qi]).sum(1), lambda qi: n)
    for m, radius in mih_variants:
        from osneural.codecs import mih

        widths = mih.substring_widths(bq.n_bits, m)
        starts = np.cumsum([0, *widths[:-1]])
        spans = [range(a, a + w) for a, w in zip(starts, widths, strict=True)]
        dk = np.stack([_keys(d_bits, c) for c in spans], 1)
        qk = np.stack([_keys(q_bits, c) for c in spans], 1)
        ones = np.array([bin(i).count("1") for i in range(1 << max(widths))], dtype=np.int8)
        df = [np.bincount(dk[:, j], minlength=1 << w) for j, w in enumerate(widths)]

        def mih_scores(qi: int, dk=dk, qk=qk, ones=ones, radius=radius) -> np.ndarray:
            dist = ones[dk ^ qk[qi]]
            return np.where(dist == 0, radius + 1, (dist <= radius).astype(np.int64)).sum(1)

        def mih_postings(qi: int, qk=qk, df=df, widths=widths, radius=radius) -> int:
            total = 0
            for j, w in enumerate(widths):
                v = int(qk[qi, j])
                total += int(df[j][v])
                if radius:
                    total += sum(int(df[j][v ^ (1 << b)]) for b in range(w))
            return total

        row(f"mih-m{m}-r{radius}", mih_scores, mih_postings, terms=m * (1 + radius * widths[0]))
    rng = np.random.default_rng(seed)
    for tables, bits in lsh_variants:
        cols = [np.sort(rng.choice(bq.n_bits, bits, replace=False)) for _ in range(tables)]
        dk = np.stack([_keys(d_bits, c) for c in cols], 1)
        qk = np.stack([_keys(q_bits, c) for c in cols], 1)
        order = [np.argsort(dk[:, j], kind="stable") for j in range(tables)]
        keys = [dk[o, j] for j, o in enumerate(order)]
        seen: dict[int, int] = {}

        def lsh_scores(qi: int, qk=qk, order=order, keys=keys, seen=seen) -> np.ndarray:
            s = np.zeros(n, dtype=np.int32)
            total = 0
            for j in range(len(keys)):
                lo, hi = np.searchsorted(keys[j], qk[qi, j], "left"), np.searchsorted(keys[j], qk[qi, j], "right")
                s[order[j][lo:hi]] += 1
                total += int(hi - lo)
            seen[qi] = total
            return s

        row(f"lsh-L{tables}-k{bits}", lsh_scores, lambda qi, seen=seen: seen[qi], terms=tables)
    return rows


def show(report: dict[str, Any], as_json: bool, label: str,
         columns: list[tuple[str, str, int]]) -> None:
    """The report as JSON, or as a table of `columns` (header, row key, width; negative: left)."""
    if as_json:
        print(json.dumps(report))
        return
    print(f"{report['docs']} docs, {report['queries']} queries, {report['n_bits']}-bit codes"
          + (f", {label}" if label else ""))

    def cell(value: Any, width: int) -> str:
        return f"{value:<{-width}}" if width < 0 else f"{value:>{width}}"

    print("".join(cell(head, w) for head, _key, w in columns))
    for r in report["rows"]:
        print("".join(cell(r.get(key, ""), w) for _head, key, w in columns))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ms", default="64,48,32,24")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--offline", action="store_true",
                    help="no node: recall and postings visited per query, ranked in numpy")
    ap.add_argument("--mih", default="64r1,48r1,32r1,64r0",
                    help="--offline: MIH variants as <m>r<radius>")
    ap.add_argument("--lsh", default="128x12,256x14,256x10,256x8,384x8,512x10",
                    help="--offline: bit-sampling LSH variants as <tables>x<bits per table>")
    args = ap.parse_args(argv)
    from osneural.codecs.binary import BinaryQuantizer
    from osneural.connection import ClusterConfig

    ms = [int(x) for x in args.ms.split(",")]
    t0 = time.perf_counter()
    ids, dense, qv, rel = _dense_corpus(args.docs)
    qids = list(rel)[: args.queries]
    qv = qv[: len(qids)]
    bq = BinaryQuantizer(bits_per_dim=1, seed=0).fit(dense[:5183])
    if args.offline:
        where = {d: i for i, d in enumerate(ids)}
        rel_idx = [{where[d] for d in rel[q] if d in where} for q in qids]
        mih_v = [tuple(int(x) for x in v.split("r")) for v in args.mih.split(",") if v]
        lsh_v = [tuple(int(x) for x in v.split("x")) for v in args.lsh.split(",") if v]
        rows = offline(dense, qv, rel_idx, bq, mih_v, lsh_v)
        report = {"docs": len(ids), "queries": len(qids), "n_bits": bq.n_bits, "offline": True,
                  "rows": rows, "command": "python bench/binary_levers.py " + " ".join(sys.argv[1:])}
        show(report, args.json, "offline", [("ranking", "stage", -22), ("terms", "terms", 6),
                                            ("postings/doc", "postings_per_doc", 14),
                                            ("R@1000 qrels", "recall_qrels", 14),
                                            ("R dense10", "recall_dense_top10", 10)])
        return 0
    client = ClusterConfig.from_values(args.url).client()
    client.transport.timeout = 600
    build(client, ids, dense, bq, ms)
    build_s = time.perf_counter() - t0
    exact10 = np.argsort(-(qv @ dense.T), axis=1)[:, :10]
    exact_ids = [{ids[j] for j in row} for row in exact10]
    qcodes = bq.encode(qv)
    rows = []

    def row(name: str, k: int, got: list[list[str]], times: list[float], **extra: Any) -> None:
        rq = statistics.mean(len(set(g) & rel[q]) / len(rel[q]) for g, q in zip(got, qids, strict=True))
        rn = statistics.mean(len(set(g) & e) / 10 for g, e in zip(got, exact_ids, strict=True))
        rows.append({"stage": name, "k": k, "p50_ms": round(pct(times, 50), 2),
                     "p95_ms": round(pct(times, 95), 2), "recall_qrels": round(rq, 4),
                     "recall_dense_top10": round(rn, 4), **extra})

    for k, ef in ((100, 100), (1000, 1000)):
        got, times = measure(client, [dense_body(v, k, ef) for v in qv])
        row(f"dense-k{k}", k, got, times)
    for v in variants(ms):
        from osneural.codecs import mih

        nterms = len(dict.fromkeys(mih.query_tokens(qcodes[0], v["m"], v["radius"], n_bits=bq.n_bits)))
        got, times = measure(client, [binary_body(v, c, bq, 1000) for c in qcodes])
        row(f"binary-{v['name']}", 1000, got, times, terms=nterms,
            guaranteed_hamming=mih.guaranteed_distance(v["m"], v["radius"]))
    ref = next(r["p50_ms"] for r in rows if r["stage"] == "dense-k100")
    for r in rows:
        r["p50_vs_dense_k100"] = round(r["p50_ms"] / ref, 2)
    stats = client.indices.stats(index=INDEX, metric="store")["indices"][INDEX]["total"]["store"]
    report = {"docs": len(ids), "queries": len(qids), "n_bits": bq.n_bits, "ms": ms,
              "index_bytes_per_doc": round(stats["size_in_bytes"] / len(ids), 1),
              "build_s": round(build_s, 1), "rows": rows,
              "command": "python bench/binary_levers.py " + " ".join(sys.argv[1:])}
    if not args.keep:
        client.indices.delete(index=INDEX, ignore_unavailable=True)
    client.close()
    show(report, args.json, "", [("stage", "stage", -34), ("terms", "terms", 6),
                                 ("p50 ms", "p50_ms", 9), ("p95 ms", "p95_ms", 9),
                                 ("x dense", "p50_vs_dense_k100", 8), ("R@k qrels", "recall_qrels", 10),
                                 ("R dense10", "recall_dense_top10", 10)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

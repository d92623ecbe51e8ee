"""Query latency and quality on SciFact: our pipeline vs OpenSearch's own knn and lateInteractionScore.

    python bench/query.py --index scifact [--build] [--queries 100] [--json]

Per stage and end to end: p50 / p95 over the SciFact test queries, sequentially and with 8
concurrent clients. In the same run: OpenSearch's plain `knn` query on `dense`, and MaxSim
rescoring inside OpenSearch (k-NN >= 3.3 `lateInteractionScore` over float token vectors stored in
an `object` field with `enabled: false`, in a side index `<index>-mvfloat`) over the same first-
stage candidates as our `maxsim` rescoring, with nDCG@10 for both so the speed ratio is read at
equal quality. `--build` ingests SciFact through the ingestion API first (every representation).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from osneural.eval.benchkit import (
    add_json_flag,
    beir_dir,
    corpus_records,
    ndcg10,
    passage,
    pct,
    print_json,
    stored_float_tokens,
    timed_map,
)

DATA = beir_dir("scifact")


def load_queries(limit: int) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from osneural.eval.beir import load_beir

    collection = load_beir(DATA, "test", limit=limit)
    return collection.queries, {q: dict(d) for q, d in collection.qrels.items()}


def _encoded_tokens(doc_ids: set[str], pool_factor: int):
    """(id, pooled float32 tokens) by encoding the documents again, for an index without
    float16 token copies."""
    from osneural.codecs import pool_tokens
    from osneural.encoders import load_default

    docs = [(d["_id"], passage(d)) for d in corpus_records(DATA) if d["_id"] in doc_ids]
    enc = load_default("multivector")
    for start in range(0, len(docs), 16):
        batch = docs[start : start + 16]
        for (doc_id, _), toks in zip(batch, enc.encode_documents([t for _, t in batch]), strict=True):
            yield doc_id, pool_tokens(toks, pool_factor) if pool_factor > 1 else toks


def build_mvfloat_index(client, index: str, side: str, doc_ids: set[str], pool_factor: int) -> None:
    """Float token vectors (pooled like `mv_codes`, so both sides score the same token set) of the
    candidate documents only, for lateInteractionScore (`object` field with `enabled: false`).
    They come from the index's float16 token copies when it has them (exactly the tokens our
    float16 MaxSim reads), else from encoding the documents again."""
    from opensearchpy import helpers

    if client.indices.exists(index=side):
        client.indices.refresh(index=side)
        if int(client.count(index=side)["count"]) >= len(doc_ids):
            return
        client.indices.delete(index=side)
    client.indices.create(index=side, body={
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"properties": {"mv": {"type": "object", "enabled": False}}}})
    props = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    tokens = (stored_float_tokens(client, index, doc_ids) if "mv_f16" in props
              else _encoded_tokens(doc_ids, pool_factor))
    actions = ({"_index": side, "_id": doc_id, "_source": {"mv": np.round(toks, 4).tolist()}}
               for doc_id, toks in tokens)
    # Small chunks with retries: each document is ~0.3 MB of JSON floats, and a 512 MB node heap
    # answers large chunks with 429 (circuit breaker).
    helpers.bulk(client, actions, chunk_size=4, max_chunk_bytes=8 << 20, request_timeout=300,
                 max_retries=8, initial_backoff=2)
    client.indices.refresh(index=side)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--index", default="osneural-quality-scifact",
                    help="a SciFact index built by bench/quality.py or `osneural ingest`")
    ap.add_argument("--build", action="store_true", help="ingest SciFact first (ingestion API)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--maxsim-queries", type=int, default=30,
                    help="queries for the MaxSim comparison (its float side index grows with them)")
    ap.add_argument("--spec", default="hybrid")
    ap.add_argument("--concurrency", type=int, default=8)
    add_json_flag(ap)
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from osneural.plugin import Searcher, load_spec

    client = OpenSearch(hosts=[args.url], timeout=120, pool_maxsize=32)
    if args.build:
        from osneural.ingest.indexer import index_corpus

        index_corpus(client, DATA, args.index, representations="all", resume=True)
    queries, qrels = load_queries(args.queries)
    spec = load_spec(args.spec)
    searcher = Searcher(client, args.index)
    searcher.search(next(iter(queries.values())), spec)  # warm encoders and codecs
    rows = []
    results: dict[str, object] = {"index": args.index, "queries": len(queries), "rows": rows}

    for workers in (1, args.concurrency):
        out, lat = timed_map(lambda q: searcher.search(queries[q], spec), list(queries), workers)[:2]
        stage_ms: dict[str, list[float]] = {}
        for resp in out.values():
            for k, v in resp["ext"]["osneural"]["timings_ms"].items():
                stage_ms.setdefault(k, []).append(v)
        run = {q: [h["_id"] for h in r["hits"]["hits"]] for q, r in out.items()}
        p50, p95 = pct(lat)
        rows.append({"what": f"osneural {args.spec} end-to-end", "clients": workers,
                     "p50_ms": p50, "p95_ms": p95, "ndcg@10": ndcg10(run, qrels)})
        for k, v in sorted(stage_ms.items()):
            if k != "total":
                a, b = pct(v)
                rows.append({"what": f"  stage {k}", "clients": workers, "p50_ms": a, "p95_ms": b})

        # OpenSearch's own knn query on the dense field (query encoding excluded on both sides)
        enc = searcher.cache.encoders.get("dense")
        vecs = {q: enc.encode_queries([t])[0].tolist() for q, t in queries.items()}

        def knn(q, vecs=vecs):
            body = {"size": 10, "_source": False,
                    "query": {"knn": {"dense": {"vector": vecs[q], "k": 10}}}}
            return [h["_id"] for h in client.search(index=args.index, body=body)["hits"]["hits"]]

        out_knn, lat_knn = timed_map(knn, list(queries), workers)[:2]
        a, b = pct(lat_knn)
        rows.append({"what": "opensearch knn (dense)", "clients": workers, "p50_ms": a,
                     "p95_ms": b, "ndcg@10": ndcg10(out_knn, qrels)})

    # MaxSim rescoring: ours (PQ-coded tokens, compiled kernel) vs lateInteractionScore in OpenSearch
    side = f"{args.index}-mvfloat"
    info = client.info()["version"]["number"]
    if tuple(int(x) for x in info.split(".")[:2]) >= (3, 3):
        base = {"first_stages": [s.model_dump() for s in spec.first_stages],
                "fusion": spec.fusion.model_dump(), "size": 100, "_source": False}
        mq = dict(list(queries.items())[: args.maxsim_queries])
        fused = {q: [h["_id"] for h in searcher.search(t, base)["hits"]["hits"]]
                 for q, t in mq.items()}
        res = searcher.cache.index(client, args.index)
        pool = int((res.codecs.params or {}).get("pool_factor", 1))
        build_mvfloat_index(client, args.index, side, {d for ids in fused.values() for d in ids}, pool)
        mv = searcher.cache.encoders.get("multivector")
        qtok = {q: mv.encode_queries([t])[0] for q, t in mq.items()}
        codec = res.codecs.token_codec  # PQ or bit codes, as the index's bundle says
        from osneural.plugin import rescoring

        def rescorer(field, score):
            """Our MaxSim over the top 100: fetch `field` from doc values (the hits' ids from the
            index's id field, as the pipeline reads them), score, reorder."""
            def run(q):
                raw = rescoring.fetch_codes(client, args.index, fused[q], field, id_field=res.id_field)
                s = score(qtok[q], raw, fused[q], field)
                return [d for d, _ in rescoring.reorder([(d, 0.0) for d in fused[q]], 100, s)][:10]
            return run

        mine = [("osneural (coded tokens)", rescorer(
            "mv_codes", lambda q, raw, ids, f: rescoring.maxsim_scores(q, raw, ids, codec, f)))]
        if res.has_field("mv_f16"):
            mine.append(("osneural (float16 tokens)",
                         rescorer("mv_f16", rescoring.maxsim_float16_scores)))

        def theirs(q):
            body = {"size": 10, "_source": False, "query": {"script_score": {
                "query": {"ids": {"values": fused[q]}},
                "script": {"source": "lateInteractionScore(params.query_vectors, 'mv', params._source, params.space_type)",
                           "params": {"query_vectors": qtok[q].tolist(), "space_type": "innerproduct"}}}}}
            return [h["_id"] for h in client.search(index=side, body=body)["hits"]["hits"]]

        mq_qrels = {q: qrels[q] for q in mq}
        for workers in (1, args.concurrency):
            o2, l2 = timed_map(theirs, list(mq), workers)[:2]
            a2, b2 = pct(l2)
            for label, fn in mine:
                o1, l1 = timed_map(fn, list(mq), workers)[:2]
                a1, b1 = pct(l1)
                rows.append({"what": f"maxsim top100: {label}", "clients": workers, "p50_ms": a1,
                             "p95_ms": b1, "ndcg@10": ndcg10(o1, mq_qrels),
                             "ratio_ours_over_theirs_p50": a1 / a2})
            rows.append({"what": "maxsim top100: lateInteractionScore", "clients": workers,
                         "p50_ms": a2, "p95_ms": b2, "ndcg@10": ndcg10(o2, mq_qrels)})
    else:
        results["late_interaction"] = f"skipped: node is {info}, lateInteractionScore needs 3.3"

    if args.json:
        print_json(results)
    else:
        print(f"{'what':44s} {'clients':>7s} {'p50 ms':>9s} {'p95 ms':>9s} {'nDCG@10':>8s} "
              f"{'p50 vs lateInteractionScore':>28s}")
        for r in rows:
            nd = f"{r['ndcg@10']:.4f}" if "ndcg@10" in r else ""
            ratio = (f"{r['ratio_ours_over_theirs_p50']:.3f}x"
                     if "ratio_ours_over_theirs_p50" in r else "")
            print(f"{r['what']:44s} {r['clients']:7d} {r['p50_ms']:9.2f} {r['p95_ms']:9.2f} "
                  f"{nd:>8s} {ratio:>28s}")
    searcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Each first stage's OpenSearch request with its hits' ids read from `_id` against from the
`osneural_id` doc values, alternating, on one index built by `osneural ingest`.

    python bench/hit_ids.py --url http://127.0.0.1:9200 --index scifact-ids --build [--docs 5183]

`--build` ingests the first `--docs` SciFact documents with every default representation into
`--index` first (the index keeps them for later runs). The bodies are the built-in specs' first
stages (bm25 100, dense 100, sparse 100, binary 1000, fde 200) for SciFact's test queries,
encoded once before timing; each is then sent both ways, in alternating order (A B, B A, ...),
`--passes` times, and the client wall time of each request is kept. Both forms must name the
same candidates in the same order (checked on every query); the table gives p50 / p95 per
stage and form, and the doc-values form's ratio to the `_id` one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

STAGES = [
    {"type": "bm25", "k": 100, "fields": ["title^1.2", "text"]},
    {"type": "dense", "k": 100, "num_candidates": 200},
    {"type": "sparse", "k": 100},
    {"type": "binary", "k": 1000, "radius": 1},
    {"type": "fde", "k": 200, "num_candidates": 400},
]


def build(url: str, index: str, docs: int) -> None:
    import itertools
    import tempfile

    from osneural.eval.benchkit import beir_dir

    with tempfile.TemporaryDirectory() as tmp:
        corpus = f"{tmp}/corpus.jsonl"
        with open(beir_dir("scifact") / "corpus.jsonl", encoding="utf-8") as src, \
                open(corpus, "w", encoding="utf-8") as dst:
            dst.writelines(itertools.islice(src, docs))
        subprocess.run([sys.executable, "-m", "osneural.cli", "ingest", corpus, "--index", index,
                        "--url", url, "--no-progress"], check=True)


def bodies(client: Any, index: str, texts: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(stage type, one body per query) for every stage of `STAGES`."""
    from osneural.plugin.query_encodings import QueryEncodings
    from osneural.plugin.resources import ResourceCache
    from osneural.plugin.spec import parse_spec
    from osneural.plugin.stages import FIRST_STAGES
    from osneural.plugin.stages.base import StageContext

    cache = ResourceCache()
    res = cache.index(client, index)
    if res.id_field is None:
        raise SystemExit(f"index {index!r} has no osneural_id kept by the osneural-id pipeline; "
                         "build it with this version of `osneural ingest` (--build)")
    out = []
    for raw in STAGES:
        stage = parse_spec({"first_stages": [raw]}).first_stages[0]
        kind = FIRST_STAGES.of(stage)
        per_query = []
        for text in texts:
            ctx = StageContext(client, index, QueryEncodings(text, res, cache), None, "bench")
            per_query.append(kind.body(stage, ctx))
        out.append((raw["type"], per_query))
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--index", default="scifact-ids")
    ap.add_argument("--build", action="store_true", help="ingest SciFact into --index first")
    ap.add_argument("--docs", type=int, default=5183)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from osneural.eval.beir import load_qrels, load_queries
    from osneural.eval.benchkit import beir_dir
    from osneural.mappings import ID_FIELD
    from osneural.plugin.stages.request import candidates, send

    from osneural.connection import ClusterConfig

    if args.build:
        build(args.url, args.index, args.docs)
    client = ClusterConfig.from_values(args.url).client()
    d = beir_dir("scifact")
    queries = load_queries(d / "queries.jsonl")
    qrels = load_qrels(d / "qrels" / "test.tsv")
    texts = [queries[q] for q in qrels if q in queries][: args.queries]
    rows = []
    for name, per_query in bodies(client, args.index, texts):
        for body in per_query[:10]:  # warm-up, both forms
            send(client, args.index, body)
            send(client, args.index, body, id_field=ID_FIELD)
        times: dict[str, list[float]] = {"_id": [], "doc values": []}
        for p in range(args.passes):
            for i, body in enumerate(per_query):
                order = [None, ID_FIELD] if (i + p) % 2 == 0 else [ID_FIELD, None]
                got = {}
                for field in order:
                    t0 = time.perf_counter()
                    resp = send(client, args.index, body, id_field=field)
                    times["_id" if field is None else "doc values"].append(
                        (time.perf_counter() - t0) * 1e3)
                    got[field] = candidates(resp, field)
                if got[None] != got[ID_FIELD]:
                    raise SystemExit(f"{name}: query {i} names other candidates by doc values")
        a, b = times["_id"], times["doc values"]
        rows.append({"stage": name, "k": STAGES[[s["type"] for s in STAGES].index(name)]["k"],
                     "id_p50_ms": round(pct(a, 50), 2), "id_p95_ms": round(pct(a, 95), 2),
                     "dv_p50_ms": round(pct(b, 50), 2), "dv_p95_ms": round(pct(b, 95), 2),
                     "p50_ratio": round(pct(b, 50) / pct(a, 50), 3),
                     "p95_ratio": round(pct(b, 95) / pct(a, 95), 3), "requests": len(a)})
    if args.json:
        print(json.dumps({"index": args.index, "queries": len(texts), "passes": args.passes,
                          "rows": rows}, indent=2))
        return 0
    print(f"{args.index}: {len(texts)} SciFact queries x {args.passes} passes, alternating")
    print("| stage | k | `_id` p50 / p95 ms | doc values p50 / p95 ms | doc values / `_id` p50 | p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['k']} | {r['id_p50_ms']} / {r['id_p95_ms']} | "
              f"{r['dv_p50_ms']} / {r['dv_p95_ms']} | {r['p50_ratio']:.2f}x | {r['p95_ratio']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

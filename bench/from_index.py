"""Enriching an existing index (`--from-index`) against ingesting the same documents from a file.

The same SciFact documents, the same representations and the same encoders (loaded once, shared
by both runs, no cache: every run encodes every text) go two ways: `index_corpus` over the
corpus file, and `index_corpus` over a source index that holds those documents (bulk-loaded
natively first, not timed). Rounds alternate file / index so a busy machine's drift hits both;
the ratio is the median of the per-round ratios of documents per second (>= 0.9 is the target:
reading the source through a PIT must not cost more than a tenth of the run).

    python bench/from_index.py --limit 300 --representations dense,sparse --rounds 2 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

from osneural.eval.benchkit import beir_dir

from osneural.paths import opensearch_url

DEFAULT_DATA = beir_dir("scifact")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=300, help="first N documents")
    ap.add_argument("--representations", default="dense,sparse")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--url", default=opensearch_url())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from opensearchpy import OpenSearch
    from opensearchpy.helpers import bulk
    from osneural.ingest.batch import load_encoders
    from osneural.ingest.codec_store import delete_codecs
    from osneural.ingest.corpus import FieldNames
    from osneural.ingest.indexer import index_corpus
    from osneural.ingest.source_index import open_source
    from osneural.mappings import normalize_representations

    corpus_file = args.data / "corpus.jsonl"
    if not corpus_file.is_file():
        print(f"no corpus at {corpus_file}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="osneural-bench-from-index-"))
    subset = tmp / "corpus.jsonl"
    with open(corpus_file, encoding="utf-8") as src, open(subset, "w", encoding="utf-8") as dst:
        dst.writelines(islice(src, args.limit))
    docs = [json.loads(line) for line in subset.read_text(encoding="utf-8").splitlines()]
    client = OpenSearch(hosts=[args.url], timeout=300)
    encoders = load_encoders(normalize_representations(args.representations))
    source, names = "bench-from-index-source", ["bench-from-index-file", "bench-from-index-index"]

    client.indices.delete(index=source, ignore_unavailable=True)
    client.indices.create(index=source, body={"mappings": {"properties": {
        "title": {"type": "text"}, "text": {"type": "text"}}}})
    bulk(client, ({"_index": source, "_id": d["_id"], "_source": {
        k: v for k, v in d.items() if k != "_id"}} for d in docs), request_timeout=300)
    client.indices.refresh(index=source)

    def run(kind: str) -> dict[str, Any]:
        index = names[0] if kind == "file" else names[1]
        client.indices.delete(index=index, ignore_unavailable=True)
        delete_codecs(client, index)
        t0 = time.perf_counter()
        corpus = subset if kind == "file" else open_source(client, source, FieldNames())
        s = index_corpus(client, corpus, index, representations=args.representations,
                         batch_size=args.batch_size, encoders=encoders, progress=False,
                         failure_report=tmp / f"{index}.failures.jsonl")
        wall = time.perf_counter() - t0
        return {"kind": kind, "docs": s.indexed, "failed": s.failed, "seconds": wall,
                "docs_per_s": s.indexed / wall, "read_s": s.stage_seconds.get("read", 0.0)}

    rows: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = ("file", "index") if r % 2 == 0 else ("index", "file")
            got = {k: run(k) for k in order}
            for k in ("file", "index"):
                rows.append({"round": r + 1, **got[k]})
    finally:
        for index in (source, *names):
            client.indices.delete(index=index, ignore_unavailable=True)
            delete_codecs(client, index)
    ratios = []
    for r in range(args.rounds):
        f, i = (next(x for x in rows if x["round"] == r + 1 and x["kind"] == k)
                for k in ("file", "index"))
        ratios.append(i["docs_per_s"] / f["docs_per_s"])
    result = {"corpus": str(corpus_file), "limit": args.limit,
              "representations": args.representations, "rounds": rows,
              "ratios": ratios, "ratio_median": statistics.median(ratios)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"--from-index against a file, {len(docs)} SciFact documents, {args.representations}")
    print(f"{'round':>5} {'source':<7}{'docs':>6}{'seconds':>9}{'docs/s':>9}{'read s':>8}")
    for x in rows:
        print(f"{x['round']:>5} {x['kind']:<7}{x['docs']:>6}{x['seconds']:>9.1f}"
              f"{x['docs_per_s']:>9.1f}{x['read_s']:>8.2f}")
    print(f"ratio (index docs/s / file docs/s) per round: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; median {result['ratio_median']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

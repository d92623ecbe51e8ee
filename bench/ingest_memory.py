"""Peak memory of the ingestion driver against corpus size.

    python bench/ingest_memory.py make --docs 1000000 --out /tmp/corpus-1m.jsonl
    python bench/ingest_memory.py run --corpus /tmp/corpus-1m.jsonl --url http://127.0.0.1:9400 \
        [--ray --workers 2] [--representations text] [--batch-size 256] [--json]

`make` writes a JSONL corpus of `--docs` lines: SciFact's and NFCorpus's real documents
(title and text as they are), drawn in a seeded random order with replacement, each under a new
id `g<n>`; one line in 100,000 repeats an id from far earlier, so the duplicate check is
exercised across the whole run.

`run` indexes that corpus through the real driver (`ray_index_corpus` with `--ray`, else
`index_corpus`) into a scratch index, deleted afterwards, and reports the driver process's own
peak resident set (`ru_maxrss` of the process, not of Ray's worker processes), its wall time, and
the indexed / rejected counts. `--representations text` skips the neural encoders (BM25 text
only), so a million documents fit in minutes on two cores while reading, validation, the
duplicate check, batching, the Ray hand-off and the bulk writes are the real ones. The script
uses only the public ingestion API, so the same file can be run by another checkout's Python to
compare two versions of the driver on the same corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

#: one line in this many repeats an earlier id (a rejection the run must report)
DUPLICATE_EVERY = 100_000


def make_corpus(docs: int, out: Path, seed: int, collections: list[Path]) -> dict[str, Any]:
    """Write the resampled corpus; what it holds (counts and sources)."""
    pool: list[tuple[str, str]] = []
    for c in collections:
        with open(c / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                pool.append((rec.get("title") or "", rec.get("text") or ""))
    rng = random.Random(seed)
    dups = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for n in range(docs):
            title, text = pool[rng.randrange(len(pool))]
            doc_id = f"g{n}"
            if n and n % DUPLICATE_EVERY == 0:
                doc_id, dups = f"g{rng.randrange(n // 2)}", dups + 1
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    return {"docs": docs, "duplicates": dups, "real_documents": len(pool), "bytes": out.stat().st_size,
            "sources": [str(c) for c in collections], "seed": seed}


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> dict[str, Any]:
    from osneural.ingest.indexer import index_corpus

    from osneural.connection import ClusterConfig

    cluster = ClusterConfig.from_values(args.url)
    client = cluster.client()
    index = args.index
    client.indices.delete(index=index, ignore_unavailable=True)
    base = peak_rss_mib()
    t0 = time.perf_counter()
    try:
        if args.ray:
            from osneural.ingest.ray_ingest import ray_index_corpus

            summary = ray_index_corpus(cluster, args.corpus, index, args.representations,
                                       batch_size=args.batch_size, workers=args.workers,
                                       progress=False, failure_report=args.failures)
        else:
            summary = index_corpus(client, args.corpus, index, args.representations,
                                   batch_size=args.batch_size, progress=False,
                                   failure_report=args.failures)
        wall = time.perf_counter() - t0
        count = client.count(index=index)["count"]
    finally:
        if not args.keep:
            client.indices.delete(index=index, ignore_unavailable=True)
        client.close()
    return {"driver": "ray" if args.ray else "single-process", "corpus": str(args.corpus),
            "representations": args.representations, "batch_size": args.batch_size,
            "workers": args.workers if args.ray else 1,
            "peak_rss_mib": round(peak_rss_mib(), 1), "rss_before_run_mib": round(base, 1),
            "wall_s": round(wall, 1), "indexed": count, "rejected": summary.failed,
            "python": sys.executable}


def main(argv: list[str] | None = None) -> int:
    from osneural.eval.benchkit import beir_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--docs", type=int, default=1_000_000)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--collections", default="scifact,nfcorpus")
    r = sub.add_parser("run")
    r.add_argument("--corpus", type=Path, required=True)
    r.add_argument("--url", default="http://127.0.0.1:9200")
    r.add_argument("--index", default="osneural-ingest-memory")
    r.add_argument("--representations", default="text")
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--ray", action="store_true")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--failures", type=Path, default=None)
    r.add_argument("--keep", action="store_true", help="keep the scratch index")
    for q in (m, r):
        q.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "make":
        out = make_corpus(args.docs, args.out, args.seed,
                          [beir_dir(c.strip()) for c in args.collections.split(",") if c.strip()])
    else:
        out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

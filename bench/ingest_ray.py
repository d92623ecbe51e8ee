"""Ingestion throughput against the number of Ray workers, with the single-process path as the
reference measured in the same run, on the first N SciFact documents and the default encoders.

Every configuration builds its own index from the same documents with the same codec training
sample (`--train-docs`, encoded and trained by the driver before the batch loop starts). The rate
compared is the batch loop's (`IngestSummary.loop_docs / loop_seconds`): what scales with
workers. For Ray that includes each actor loading its encoders (Ray itself is started before
timing). `busy s/doc` is the workers' summed stage time per document, so `1 / busy` is what one
worker (one core, `--threads-per-worker` ONNX threads) sustains when it never waits; the closing
lines extrapolate a cluster from it and from OpenSearch's bulk cost per document on this node.

    python bench/ingest_ray.py --limit 240 --workers 1,2 [--json] [--url http://127.0.0.1:9200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from osneural.eval.benchkit import beir_dir, corpus_records

ENCODE_STAGES = ("encode_dense", "encode_sparse", "encode_multivector", "encode_dense+multivector")


def load_docs(limit: int) -> list[dict[str, Any]]:
    path = beir_dir("scifact") / "corpus.jsonl"
    if path.is_file():
        return corpus_records(path, limit)
    from osneural.ingest.sample import sample_corpus

    return list(sample_corpus(limit))


def row(label: str, workers: int, s: Any) -> dict[str, Any]:
    busy = sum(v for k, v in s.stage_seconds.items() if k not in ("read", "train_codecs"))
    return {
        "config": label, "workers": workers, "indexed": s.indexed, "failed": s.failed,
        "total_s": round(s.seconds, 2), "loop_docs": s.loop_docs,
        "loop_s": round(s.loop_seconds, 2),
        "loop_docs_per_s": round(s.loop_docs / s.loop_seconds, 2) if s.loop_seconds else 0.0,
        "busy_s_per_doc": round(busy / s.indexed, 4) if s.indexed else None,
        "encode_s_per_doc": round(sum(s.stage_seconds.get(k, 0.0) for k in ENCODE_STAGES)
                                  / s.indexed, 4) if s.indexed else None,
        "bulk_s_per_doc": round(s.stage_seconds.get("bulk", 0.0) / s.indexed, 5) if s.indexed else None,
        "stage_seconds": {k: round(v, 2) for k, v in s.stage_seconds.items() if v >= 0.005},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=240, help="SciFact documents")
    p.add_argument("--workers", default="1,2", help="comma list of Ray actor counts")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-docs", type=int, default=32)
    p.add_argument("--representations", default=None)
    p.add_argument("--url", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    import ray
    from osneural.ingest.codec_store import delete_codecs
    from osneural.ingest.indexer import CodecParams, index_corpus
    from osneural.ingest.ray_ingest import DEFAULT_OBJECT_STORE_BYTES, ray_index_corpus

    from osneural.connection import ClusterConfig
    from osneural.encoders import load_default

    cfg = ClusterConfig.from_values(args.url.split(",") if args.url else None, timeout=120)
    client = cfg.client()
    docs = load_docs(args.limit)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    params = CodecParams(train_docs=args.train_docs)
    common = dict(representations=args.representations, batch_size=args.batch_size,
                  codec_params=params, progress=False, failure_report=Path("/tmp") /
                  f"bench-ingest-ray-{os.getpid()}.failures.jsonl")
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    ray.init(num_cpus=max(counts), object_store_memory=DEFAULT_OBJECT_STORE_BYTES,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        name = f"bench-ray-single-{uuid.uuid4().hex[:6]}"
        names.append(name)
        encs = {k: load_default(k) for k in ("dense", "sparse", "multivector")}
        s = index_corpus(client, docs, name, encoders=encs, **common)
        rows.append(row("single process (ONNX default threads)", 1, s))
        del encs
        for w in counts:
            name = f"bench-ray-{w}-{uuid.uuid4().hex[:6]}"
            names.append(name)
            t0 = time.perf_counter()
            s = ray_index_corpus(cfg, docs, name, workers=w,
                                 threads_per_worker=args.threads_per_worker, **common)
            rows.append(row(f"ray, {w} actor(s) x {args.threads_per_worker} thread", w, s))
            rows[-1]["wall_s"] = round(time.perf_counter() - t0, 2)
    finally:
        ray.shutdown()
        for name in names:
            client.indices.delete(index=name, ignore_unavailable=True)
            delete_codecs(client, name)
        client.close()

    ref = rows[0]["loop_docs_per_s"] or 1.0
    for r in rows:
        r["ratio_vs_single"] = round(r["loop_docs_per_s"] / ref, 2)
    one = next((r for r in rows if r["workers"] == 1 and r["config"].startswith("ray")), None)
    per_worker = 1.0 / one["busy_s_per_doc"] if one and one["busy_s_per_doc"] else None
    bulk_cost = rows[0]["bulk_s_per_doc"] or None
    out = {"documents": len(docs), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
           "rows": rows, "per_worker_docs_per_s": round(per_worker, 2) if per_worker else None,
           "bulk_s_per_doc_one_node": bulk_cost}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(docs)} SciFact documents, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'config':<40} {'loop docs/s':>11} {'ratio':>6} {'loop s':>7} {'total s':>8} "
          f"{'busy s/doc':>10} {'encode s/doc':>12} {'bulk s/doc':>10}")
    for r in rows:
        print(f"{r['config']:<40} {r['loop_docs_per_s']:>11.2f} {r['ratio_vs_single']:>6.2f} "
              f"{r['loop_s']:>7.1f} {r['total_s']:>8.1f} {r['busy_s_per_doc']:>10.3f} "
              f"{r['encode_s_per_doc']:>12.3f} {r['bulk_s_per_doc']:>10.4f}")
    if per_worker:
        print(f"per worker (1 core): {per_worker:.2f} docs/s when busy; a cluster of N nodes x C "
              f"cores: about N*C*{per_worker:.2f} docs/s while OpenSearch keeps up "
              f"(bulk here: {bulk_cost:.4f} s/doc of one node's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

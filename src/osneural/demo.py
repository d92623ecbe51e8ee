"""`osneural demo`: the README's main job on the embedded default corpus.

Ingests the Python standard library's docstrings (extracted at run time, so real text exists on
every machine without a download) with every representation, then runs a few questions through
BM25 alone and through the hybrid pipeline, so a newcomer sees what the neural stages add.
"""

from __future__ import annotations

import argparse
import sys
import time

from osneural.connection import ClusterConfig, ClusterConfigError, add_cluster_arguments

DEMO_QUERIES = (
    "how do I parse a JSON string into a Python object",
    "compress data with gzip",
    "run a shell command and capture its output",
    "sort items by a key function",
)


def configure_demo(parser: argparse.ArgumentParser) -> None:
    add_cluster_arguments(parser)
    parser.add_argument("--index", default="osneural-demo")
    parser.add_argument("--limit", type=int, default=600,
                        help="ingest this many docstrings, spread evenly over all modules (0 = all)")
    parser.add_argument("--spec", default="hybrid", help="pipeline spec name or JSON file")
    parser.add_argument("query", nargs="*", help="questions to ask (defaults to a few examples)")


def run_demo(args: argparse.Namespace) -> int:
    from osneural.ingest.indexer import index_corpus
    from osneural.ingest.sample import sample_corpus
    from osneural.plugin.searcher import Searcher
    from osneural.plugin.spec import load_spec

    try:
        cluster = ClusterConfig.from_args(args, timeout=120)
    except ClusterConfigError as exc:
        print(f"osneural demo: {exc}", file=sys.stderr)
        return 2
    client = cluster.client()
    corpus = sample_corpus()
    if args.limit and args.limit < len(corpus):
        # An even spread keeps every module represented, so the example questions have answers.
        step = len(corpus) / args.limit
        corpus = [corpus[int(i * step)] for i in range(args.limit)]
    print(f"sample corpus: {len(corpus)} standard-library docstrings -> index {args.index!r} at {cluster.describe()}")
    summary = index_corpus(client, corpus, args.index, resume=True)
    print(summary.format())
    searcher = Searcher(client, args.index)
    try:
        for name in ("bm25", args.spec):
            spec = load_spec(name)
            print(f"\n== pipeline {name!r}")
            for question in args.query or DEMO_QUERIES:
                t0 = time.perf_counter()
                response = searcher.search(question, spec)
                ms = (time.perf_counter() - t0) * 1000
                print(f"\n  {question!r}  ({ms:.0f} ms)")
                for hit in response["hits"]["hits"][:3]:
                    title = (hit.get("_source") or {}).get("title", "")
                    print(f"    {hit['_score']:8.4f}  {hit['_id']:<40} {title[:60]}")
                for warning in response.get("warnings", []):
                    print(f"    warning: {warning}", file=sys.stderr)
    finally:
        searcher.close()
    return 0

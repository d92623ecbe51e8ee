"""`osneural eval` (and `osneural tune`, in `osneural.eval.tune`): the command-line faces.

Only argument parsing and printing live here; encoders load inside `run_eval`, so `osneural --help`
stays instant. The cluster client comes from `osneural.connection`, which already retries a request
on every other host; the runner retries what is left and counts what still fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from osneural.eval.beir import EvalDataError
from osneural.eval.metrics import RUN_DEPTH
from osneural.eval.runner import RetryPolicy, evaluate_specs, spec_label
from osneural.plugin.spec import PipelineSpec, SpecError, load_spec

from osneural.connection import ClusterConfig, ClusterConfigError, add_cluster_arguments


def configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("beir_dir", metavar="BEIR_DIR", help="folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--index", required=True, help="index holding the collection's corpus")
    parser.add_argument(
        "--spec", action="append", required=True, metavar="FILE",
        help="pipeline spec JSON file or built-in spec name; repeat to compare several",
    )
    parser.add_argument("--split", default="test", help="qrels split (qrels/SPLIT.tsv); default test")
    parser.add_argument("--qrels", metavar="FILE", help="judgments file (BEIR tsv or TREC) instead of qrels/SPLIT.tsv")
    parser.add_argument("--out", metavar="FILE", help="write the JSON result here")
    parser.add_argument("--compare", metavar="FILE", help="earlier JSON result: print the deltas")
    parser.add_argument("--max-queries", type=int, metavar="N", help="evaluate only the first N judged queries")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed warm-up queries per spec (default 1)")
    parser.add_argument("--timeout-ms", type=int, metavar="MS", help="override every spec's timeout_ms")
    parser.add_argument(
        "--keep-identical-ids", action="store_true",
        help="keep hits whose id equals the query id (BEIR drops them, which ArguAna needs)",
    )
    parser.add_argument("--per-query", action="store_true", help="include per-query metrics in the JSON")
    parser.add_argument("--markdown", action="store_true", help="print tables as Markdown")
    parser.add_argument("--no-corpus-check", action="store_true", help="do not read corpus.jsonl to count judged ids absent from it")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="tries after the first for a query that failed transiently "
                             "(connection lost, 5xx); default 2, with backoff")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar / progress lines on stderr")
    add_cluster_arguments(parser)


def _load_specs(args_specs: Sequence[str]) -> list[tuple[str, PipelineSpec, str]]:
    taken: set[str] = set()
    out = []
    for item in args_specs:
        try:
            spec = load_spec(item)
        except SpecError as exc:
            raise SpecError(f"--spec {item}: {exc}") from None
        out.append((spec_label(item, taken), spec, item))
    return out


def run_eval(args: argparse.Namespace) -> int:
    """Exit 0 when every query of every spec answered, 1 when some failed, 2 on bad input."""
    from osneural.eval.beir import load_beir
    from osneural.eval.report import (
        ResultFileError,
        build_result,
        compare,
        format_table,
        load_result,
    )

    try:
        specs = _load_specs(args.spec)
        old = load_result(args.compare) if args.compare else None
        if args.max_queries is not None and args.max_queries < 1:
            raise EvalDataError("--max-queries must be at least 1")
        if args.retries < 0:
            raise EvalDataError("--retries must be at least 0")
        cluster = ClusterConfig.from_args(args)
        collection = load_beir(
            args.beir_dir, args.split, qrels_path=args.qrels,
            check_corpus=not args.no_corpus_check, limit=args.max_queries,
        )
    except (SpecError, EvalDataError, ResultFileError, ClusterConfigError) as exc:
        print(f"osneural eval: {exc}", file=sys.stderr)
        return 2

    from osneural.plugin.searcher import Searcher

    client = cluster.client()
    try:
        if not client.indices.exists(index=args.index):
            print(f"osneural eval: index {args.index!r} not found at {cluster.describe()}", file=sys.stderr)
            return 2
        searcher = Searcher(client, args.index)
        try:
            results = evaluate_specs(
                searcher.search, collection, specs,
                drop_identical_ids=not args.keep_identical_ids, warmup=args.warmup,
                timeout_ms=args.timeout_ms, progress=not args.no_progress,
                retry=RetryPolicy(attempts=args.retries + 1),
            )
        finally:
            searcher.close()
    finally:
        client.close()

    result = build_result(
        results,
        collection=collection.describe(),
        index=args.index,
        url=cluster.describe(),
        settings={
            "run_depth": RUN_DEPTH,
            "drop_identical_ids": not args.keep_identical_ids,
            "warmup": args.warmup,
            "timeout_ms": args.timeout_ms,
            "latency": "client wall time of Searcher.search, per query, sequential",
            "retries": args.retries,
        },
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        per_query=args.per_query,
    )
    print(format_table(result, markdown=args.markdown))
    if old is not None:
        print()
        print(f"compared with {args.compare}:")
        print(compare(result, old, markdown=args.markdown))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.complete for r in results) else 1

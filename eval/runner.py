"""`osneural eval`: run a BEIR collection's test queries through pipeline specs and score them.

Each query goes through the same `Searcher.search` a user's query takes, so the figures measure the
product, not a re-implementation of it. Latency is the wall time of that call as the caller sees it
(encoding, every OpenSearch round trip, fusion, rescoring). A query that raises is recorded as a
failure and left out of the means, and the spec is flagged: averaging it in as a zero would make a
broken pipeline look like a bad one, and dropping it quietly would make it look fine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from osneural.plugin.eval_beir import EvalCollection, EvalDataError
from osneural.plugin.eval_metrics import (
    RUN_DEPTH,
    compute_metrics,
    latency_stats,
    ranked_run,
    summarize_errors,
)
from osneural.plugin.eval_report import SpecResult
from osneural.plugin.spec import PipelineSpec, SpecError, load_spec, parse_spec

from osneural.connection import ClusterConfig, ClusterConfigError, add_cluster_arguments

SearchFn = Callable[[str, PipelineSpec], dict[str, Any]]
ERRORS_KEPT = 5


def for_evaluation(spec: PipelineSpec, timeout_ms: int | None = None) -> PipelineSpec:
    """The spec as evaluation runs it: deep enough for Recall@100, first page, no payloads.

    Only paging and payload fields change; the ranking itself (stages, windows, fusion) is the
    user's. `_source` and explanations are switched off because fetching them would be timed.
    """
    data = spec.to_dict()
    data["size"] = max(RUN_DEPTH, spec.size)
    data["from"] = 0
    data["_source"] = False
    data["explain"] = False
    if timeout_ms is not None:
        data["timeout_ms"] = timeout_ms
    return parse_spec(data)


def _hit_ids(response: Any) -> list[str]:
    """The ranked ids of an OpenSearch-shaped response; a malformed one is a failure, not a zero."""
    try:
        hits = response["hits"]["hits"]
        return [str(h["_id"]) for h in hits]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed search response (no hits.hits[]._id): {exc!r}") from None


def _warnings(response: dict[str, Any]) -> list[str]:
    ext = response.get("ext") if isinstance(response, dict) else None
    found = list(((ext or {}).get("osneural") or {}).get("warnings") or [])
    if response.get("timed_out") and not found:
        found.append("timed_out")
    return [str(w) for w in found]


def evaluate_spec(
    search: SearchFn,
    collection: EvalCollection,
    spec: PipelineSpec,
    name: str,
    *,
    drop_identical_ids: bool = True,
    warmup: int = 1,
    timeout_ms: int | None = None,
    source: str = "",
    progress: bool = False,
) -> SpecResult:
    """Run every query of `collection` through `search` with `spec` and score the rankings."""
    run_spec = for_evaluation(spec, timeout_ms)
    items = list(collection.queries.items())
    # Warm-up queries load encoders and codecs into the process; their time is not a query's.
    for _qid, text in items[: max(0, warmup)]:
        with contextlib.suppress(Exception):  # the timed pass below records any failure
            search(text, run_spec)

    runs: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    errors: list[tuple[str, str]] = []
    warned: list[dict[str, Any]] = []
    with_warnings = 0
    dropped = 0
    iterator: Any = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc=name, unit="q", file=sys.stderr, leave=False)
    for qid, text in iterator:
        t0 = time.perf_counter()
        try:
            response = search(text, run_spec)
            ids = _hit_ids(response)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never scored
            errors.append((qid, f"{type(exc).__name__}: {exc}"))
            continue
        latencies.append((time.perf_counter() - t0) * 1e3)
        run, n_dropped = ranked_run(ids, qid if drop_identical_ids else None)
        dropped += n_dropped
        runs[qid] = run
        found = _warnings(response)
        if found:
            with_warnings += 1
            if len(warned) < ERRORS_KEPT:
                warned.append({"query_id": qid, "warnings": found})

    if runs:
        means, per_query = compute_metrics(collection.qrels, runs)
        metrics: dict[str, float | None] = dict(means)
    else:
        per_query = {}
        metrics = {"ndcg@10": None, "recall@100": None, "mrr@10": None}
    return SpecResult(
        name=name,
        pipeline=spec.to_dict(),
        metrics=metrics,
        latency_ms=latency_stats(latencies),
        queries=len(items),
        evaluated=len(runs),
        failed=len(errors),
        with_warnings=with_warnings,
        identical_ids_dropped=dropped,
        errors=summarize_errors(errors, ERRORS_KEPT),
        warnings=warned,
        source=source,
        per_query=per_query,
    )


def spec_label(name_or_path: str, taken: set[str]) -> str:
    """A short unique name for a spec argument: the built-in name or the file's stem."""
    base = Path(name_or_path).stem if name_or_path.endswith(".json") else name_or_path
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base}#{n}"
    taken.add(label)
    return label


def evaluate_specs(
    search: SearchFn,
    collection: EvalCollection,
    specs: Sequence[tuple[str, PipelineSpec, str]],
    **kwargs: Any,
) -> list[SpecResult]:
    """`evaluate_spec` for each `(name, spec, source)`, in order."""
    return [
        evaluate_spec(search, collection, spec, name, source=source, **kwargs)
        for name, spec, source in specs
    ]


# ---------------------------------------------------------------- command line


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
    from osneural.plugin.eval_beir import load_beir
    from osneural.plugin.eval_report import (
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
                timeout_ms=args.timeout_ms, progress=sys.stderr.isatty(),
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

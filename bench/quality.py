"""Retrieval quality on BEIR SciFact and NFCorpus: the fixed spec set, one index per dataset.

    python bench/quality.py [--datasets scifact nfcorpus] [--rebuild] [--json] [--write-docs]

For each dataset: build `<prefix><dataset>` with every representation through the ingestion API
(skipped when the index already holds the corpus's document count; `--rebuild` forces it), then
run the test queries through each spec of `SPECS` with the same `Searcher` a user's query takes,
and print nDCG@10 / Recall@100 / MRR@10, mean and p95 latency, and the differences against BM25
measured in the same run. `--json` prints the same figures as JSON. `--write-docs` also writes
`docs/results.md` (with this command line) and one recall-against-latency PNG per dataset.

The quality targets are checked and printed as pass/fail lines; a failing target is a finding to
report, not a reason to tune the specs here (they are fixed so results stay comparable).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from osneural.eval.benchkit import REPO, beir_root, replace_block, stored_dense

from osneural.paths import opensearch_url

DEFAULT_DATA = beir_root()
DOCS = REPO / "docs"

_BM25 = {"type": "bm25", "k": 100, "fields": ["title^1.2", "text"]}
_DENSE = {"type": "dense", "k": 100, "num_candidates": 200}
_SPARSE = {"type": "sparse", "k": 100, "mode": "model"}
# MiniLM's token embeddings were never trained for late interaction: alone they rank below the
# hybrid, so MaxSim refines the fused ranking (a 0.2 share of min-max scores) rather than
# replacing it; the "replace" row shows MaxSim on its own over the same window.
_MAXSIM100 = {"type": "maxsim", "window": 100, "combine": "linear", "weight": 0.2}
_MAXSIM100_ONLY = {"type": "maxsim", "window": 100}
_F16 = {"tokens": "float16"}  # the same MaxSim over the float16 copies of the same pooled tokens

#: The fixed spec set of the quality table, in its order. Hybrids name their single stages in
#: `parts` so the "every hybrid beats each of its single stages" target can be checked.
SPECS: list[dict[str, Any]] = [
    {"name": "bm25", "spec": {"first_stages": [_BM25]}},
    {"name": "dense", "spec": {"first_stages": [_DENSE]}},
    {"name": "sparse", "spec": {"first_stages": [_SPARSE]}},
    {"name": "sparse-inference-free",
     "spec": {"first_stages": [{**_SPARSE, "mode": "inference_free"}]}},
    {"name": "binary+hamming",
     "spec": {"first_stages": [{"type": "binary", "k": 1000, "radius": 1}],
              "rescore": [{"type": "hamming", "window": 1000}]}},
    {"name": "binary+pq+dense",
     "spec": {"first_stages": [{"type": "binary", "k": 1000, "radius": 1}],
              "rescore": [{"type": "pq", "window": 1000}, {"type": "dense", "window": 100}]}},
    {"name": "fde+maxsim",
     "spec": {"first_stages": [{"type": "fde", "k": 200, "num_candidates": 400}],
              "rescore": [{"type": "maxsim", "window": 200}]}},
    {"name": "bm25+dense (rrf)", "parts": ["bm25", "dense"],
     "spec": {"first_stages": [_BM25, _DENSE], "fusion": {"type": "rrf", "rank_constant": 60}}},
    {"name": "bm25+dense+sparse (rrf)", "parts": ["bm25", "dense", "sparse"],
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "rrf", "rank_constant": 60}}},
    {"name": "bm25+dense+sparse (rrf) +maxsim@100", "parts": ["bm25", "dense", "sparse"],
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "rrf", "rank_constant": 60}, "rescore": [_MAXSIM100]}},
    {"name": "bm25+dense+sparse (rrf) then maxsim@100 alone",
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "rrf", "rank_constant": 60}, "rescore": [_MAXSIM100_ONLY]}},
    {"name": "bm25+dense+sparse (linear) +maxsim@100", "parts": ["bm25", "dense", "sparse"],
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "linear", "normalization": "minmax"}, "rescore": [_MAXSIM100]}},
    # Float twins of the MaxSim rows: the "PQ-coded MaxSim within 0.5 point of float" target.
    {"name": "bm25+dense+sparse (rrf) +maxsim@100, float tokens",
     "pq_twin": "bm25+dense+sparse (rrf) +maxsim@100",
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "rrf", "rank_constant": 60}, "rescore": [{**_MAXSIM100, **_F16}]}},
    {"name": "bm25+dense+sparse (rrf) then maxsim@100 alone, float tokens",
     "pq_twin": "bm25+dense+sparse (rrf) then maxsim@100 alone",
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "rrf", "rank_constant": 60},
              "rescore": [{**_MAXSIM100_ONLY, **_F16}]}},
    {"name": "bm25+dense+sparse (linear) +maxsim@100, float tokens",
     "pq_twin": "bm25+dense+sparse (linear) +maxsim@100",
     "spec": {"first_stages": [_BM25, _DENSE, _SPARSE],
              "fusion": {"type": "linear", "normalization": "minmax"},
              "rescore": [{**_MAXSIM100, **_F16}]}},
]

#: nDCG@10 the best pipeline is to reach (SPLADE++ 110M reaches 0.704 / 0.347).
BEST_TARGET = {"scifact": 0.70, "nfcorpus": 0.345}
DATASETS = ("scifact", "nfcorpus")


# ---------------------------------------------------------------- index


def ensure_index(
    client: Any, data_dir: Path, index: str, rebuild: bool, log: Any, batch_size: int = 16,
    representations: str | list[str] = "all",
) -> dict[str, Any]:
    """Build `index` (every representation unless told fewer) unless it already holds the
    whole corpus; `bench/defaults.py` asks only for what its pipelines read."""
    from osneural.eval.beir import load_corpus_ids
    from osneural.ingest.codec_store import delete_codecs
    from osneural.ingest.indexer import index_corpus

    expected = len(load_corpus_ids(data_dir))
    if client.indices.exists(index=index) and not rebuild:
        client.indices.refresh(index=index)
        have = int(client.count(index=index)["count"])
        if have == expected:
            print(f"{index}: {have} documents already indexed; not rebuilding", file=log)
            return {"built": False, "documents": have, "seconds": 0.0}
        # A partial index (an interrupted build) resumes: its codecs are stored, ids are skipped.
        print(f"{index}: holds {have} documents, corpus has {expected}; resuming", file=log)
        resume = True
    else:
        resume = False
        if client.indices.exists(index=index):
            client.indices.delete(index=index)
        delete_codecs(client, index)
    print(f"{index}: building with representations {representations} ({expected} documents)",
          file=log)
    t0 = time.perf_counter()
    summary = index_corpus(
        client, data_dir, index, representations=representations, progress=log.isatty(), resume=resume,
        batch_size=batch_size,
        failure_report=Path(os.environ.get("TMPDIR", "/tmp")) / f"{index}.failures.jsonl",
    )
    print(summary.format(), file=log)
    return {"built": True, "documents": summary.indexed, "failed": summary.failed,
            "seconds": time.perf_counter() - t0, "stage_seconds": summary.stage_seconds}


# ---------------------------------------------------------------- targets


def check_targets(dataset: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quality targets as pass/fail records (missing figures fail, never pass)."""
    ndcg = {r["name"]: r["metrics"].get("ndcg@10") for r in runs if r.get("failed", 0) == 0}
    parts = {s["name"]: s.get("parts", []) for s in SPECS}
    checks = []

    def add(claim: str, ok: bool | None, detail: str) -> None:
        checks.append({"claim": claim, "pass": bool(ok), "detail": detail})

    def fmt(x: float | None) -> str:
        return "missing" if x is None else f"{x:.4f}"

    for name, singles in parts.items():
        if not singles:
            continue
        mine = ndcg.get(name)
        rivals = {s: ndcg.get(s) for s in dict.fromkeys(["bm25", *singles])}
        ok = mine is not None and all(v is not None and mine > v for v in rivals.values())
        add(f"{name} beats BM25 and each of its single stages", ok,
            f"{fmt(mine)} vs " + ", ".join(f"{k} {fmt(v)}" for k, v in rivals.items()))
    complete = {k: v for k, v in ndcg.items() if v is not None}
    if complete:
        best = max(complete, key=complete.get)
        target = BEST_TARGET.get(dataset)
        if target is not None:
            add(f"best pipeline reaches nDCG@10 {target}", complete[best] >= target,
                f"{best} {complete[best]:.4f}")
    b, d = ndcg.get("binary+pq+dense"), ndcg.get("dense")
    add("binary-token first stage with rescoring within 1 point of dense",
        b is not None and d is not None and b >= d - 0.01, f"{fmt(b)} vs dense {fmt(d)}")
    for spec in SPECS:
        if "pq_twin" not in spec:
            continue
        f, p = ndcg.get(spec["name"]), ndcg.get(spec["pq_twin"])
        add(f"PQ-coded MaxSim within 0.5 point of float: {spec['pq_twin']}",
            f is not None and p is not None and p >= f - 0.005, f"PQ {fmt(p)} vs float {fmt(f)}")
    return checks


# ---------------------------------------------------------------- outputs


def _table(dataset: str, result: dict[str, Any], markdown: bool) -> str:
    """The eval table plus the differences against BM25 measured in the same run."""
    from osneural.eval.report import format_table

    base = next((r for r in result["runs"] if r["name"] == "bm25"), None)
    text = format_table(result, markdown=markdown)
    if base is None or base["metrics"].get("ndcg@10") is None:
        return text
    lines = ["", f"against bm25 ({dataset}): ΔnDCG@10, latency ratio (mean)"]
    for run in result["runs"]:
        n, b = run["metrics"].get("ndcg@10"), base["metrics"]["ndcg@10"]
        lm, bm = run["latency_ms"].get("mean"), base["latency_ms"].get("mean")
        dn = "-" if n is None else f"{n - b:+.4f}"
        ratio = "-" if not lm or not bm else f"{lm / bm:.2f}x"
        lines.append(f"  {run['name']:<40} {dn:>8} {ratio:>8}")
    return text + "\n".join(lines)


def plot(dataset: str, result: dict[str, Any], path: Path) -> None:
    """Recall@100 against mean latency (p95 as the error bar's right end), one point per spec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for run in result["runs"]:
        recall, lat = run["metrics"].get("recall@100"), run["latency_ms"]
        if recall is None or lat.get("mean") is None:
            continue
        hybrid = "+" in run["name"] and "(" in run["name"]
        ax.errorbar(
            lat["mean"], recall, xerr=[[0], [max(0.0, lat["p95"] - lat["mean"])]],
            fmt="s" if hybrid else "o", capsize=3, color="tab:red" if hybrid else "tab:blue",
        )
        ax.annotate(run["name"], (lat["mean"], recall), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency per query, ms (marker: mean; bar: to p95; log scale)")
    ax.set_ylabel("Recall@100")
    ax.set_title(f"{dataset}: recall against latency (red: hybrids)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    out = [
        "# Retrieval quality on BEIR",
        "",
        "Produced by:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Measured {report['created']} on {report['machine']}; OpenSearch {report['opensearch']} "
        f"at {report['url']}. Metrics by ranx with BEIR's conventions (nDCG@10 with gain = grade, "
        "grade 0 non-relevant, hits equal to the query id dropped, queries without judgments "
        "skipped); latency is the client's wall time of `Searcher.search` per query, run one "
        "query at a time after one warm-up query, on a shared machine, so read it as relative.",
        "",
    ]
    for ds in report["datasets"]:
        res = ds["result"]
        coll = res["collection"]
        out += [
            f"## {ds['name']}",
            "",
            f"{coll['evaluated']} test queries, index `{res['index']}` "
            f"({ds['index']['documents']} documents).",
            "",
            _table(ds["name"], res, markdown=True).split("\nagainst bm25")[0],
            "",
            "| target | result | detail |",
            "|---|---|---|",
            *(f"| {c['claim']} | {'pass' if c['pass'] else 'FAIL'} | {c['detail']} |"
              for c in ds["targets"]),
            "",
            f"![{ds['name']} recall against latency]({ds['chart']})" if ds.get("chart") else "",
            "",
        ]
    text = "\n".join(out).rstrip() + "\n"
    # generated blocks (bench/defaults.py, --matryoshka) come from other runs: keep them
    import re

    old = path.read_text(encoding="utf-8") if path.exists() else ""
    blocks = re.findall(r"<!-- (\S+):begin -->.*?<!-- \1:end -->", old, flags=re.S)
    for name in blocks:
        block = re.search(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->",
                          old, flags=re.S).group(0)
        text += "\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- Matryoshka truncation


def matryoshka_rows(
    client: Any, index: str, collection: Any, dims: list[int], log: Any
) -> list[dict[str, Any]]:
    """nDCG@10 / Recall@100 of dense retrieval with the vectors cut to each Matryoshka prefix.

    Measured without re-encoding: the index's stored full vectors and the queries' are cut and
    re-normalised exactly as `--matryoshka` ingestion does (`ingest.documents.matryoshka`), and
    scored by exact (brute-force) cosine, so every row differs from the full-width row in the
    truncation only; the full-width row is the reference measured in the same run. Bytes are the
    float32 vector payload per document and for the index (HNSW graph links come on top, the same
    for every width).
    """
    import numpy as np
    from osneural.eval.metrics import compute_metrics, ranked_run
    from osneural.ingest.documents import matryoshka

    from osneural.encoders import load_default

    ids, docs = stored_dense(client, index)
    qids = list(collection.queries)
    queries = np.asarray(load_default("dense").encode_queries([collection.queries[q] for q in qids]),
                         dtype=np.float32)
    full = docs.shape[1]
    rows = []
    for dim in sorted({*dims, full}):
        d, q = matryoshka(docs, dim), matryoshka(queries, dim)
        scores = q @ d.T
        top = np.argsort(-scores, axis=1)[:, :100]
        runs = {qid: ranked_run([ids[i] for i in top[n]], qid)[0] for n, qid in enumerate(qids)}
        means, _ = compute_metrics(collection.qrels, runs)
        rows.append({"dim": dim, "ndcg@10": means["ndcg@10"], "recall@100": means["recall@100"],
                     "bytes_per_doc": dim * 4, "index_vector_bytes": dim * 4 * len(ids),
                     "documents": len(ids)})
        print(f"{index}: matryoshka {dim}: nDCG@10 {means['ndcg@10']:.4f}", file=log, flush=True)
    ref = rows[-1]["ndcg@10"]
    for row in rows:
        row["delta_vs_full"] = row["ndcg@10"] - ref
    return rows


def matryoshka_markdown(command: str, results: dict[str, list[dict[str, Any]]]) -> str:
    out = ["## Matryoshka truncation (`--matryoshka`)", "", "Produced by:", "", "```", command,
           "```", "",
           "Dense retrieval with the stored MiniLM vectors cut to a prefix and re-normalised (what "
           "`osneural ingest --matryoshka` writes to `dense_<dim>`), scored exactly (brute force) "
           "so the rows differ in the truncation only. MiniLM-L6 was not trained with a Matryoshka "
           "loss, so its prefixes carry less than a Matryoshka model's would.", ""]
    for ds, rows in results.items():
        out += [f"### {ds}", "", "| dim | nDCG@10 | Δ vs full | R@100 | bytes/doc | vector bytes, index |",
                "|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['dim']} | {r['ndcg@10']:.4f} | {r['delta_vs_full']:+.4f} | "
                f"{r['recall@100']:.4f} | {r['bytes_per_doc']} | {r['index_vector_bytes']:,} |"
                for r in rows]
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--url", default=opensearch_url())
    ap.add_argument("--index-prefix", default="osneural-quality-")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the indexes even if complete")
    ap.add_argument("--max-queries", type=int, help="first N judged queries only (smoke runs)")
    ap.add_argument("--specs", nargs="+", help="only these spec names (default: all)")
    ap.add_argument("--timeout-ms", type=int, default=30_000,
                    help="per-stage deadline; generous so a loaded machine degrades no stage")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--write-docs", action="store_true", help="write docs/results.md and PNGs")
    ap.add_argument("--results-dir", type=Path, help="also save each dataset's eval JSON here")
    ap.add_argument("--matryoshka", metavar="DIMS",
                    help="comma list of prefix widths: measure Matryoshka truncation only "
                         "(no spec runs); with --write-docs, its block in docs/results.md")
    args = ap.parse_args(argv)
    if args.matryoshka:
        return main_matryoshka(args, argv)

    from opensearchpy import OpenSearch
    from osneural.eval.beir import load_beir
    from osneural.eval.report import build_result
    from osneural.eval.runner import evaluate_specs
    from osneural.plugin.searcher import Searcher
    from osneural.plugin.spec import parse_spec

    log = sys.stderr
    chosen = [s for s in SPECS if not args.specs or s["name"] in args.specs]
    if not chosen:
        ap.error(f"no spec matches {args.specs}; known: {[s['name'] for s in SPECS]}")
    specs = [(s["name"], parse_spec(s["spec"]), "bench/quality.py") for s in chosen]
    client = OpenSearch(hosts=[args.url], timeout=120)
    version = client.info()["version"]["number"]
    report: dict[str, Any] = {
        "command": "python bench/quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "opensearch": version,
        "url": args.url,
        "datasets": [],
    }
    for name in args.datasets:
        data_dir = args.data_dir / name
        index = f"{args.index_prefix}{name}"
        built = ensure_index(client, data_dir, index, args.rebuild, log)
        collection = load_beir(data_dir, "test", limit=args.max_queries)
        searcher = Searcher(client, index)
        print(f"{index}: evaluating {len(specs)} specs on {collection.stats.evaluated} queries",
              file=log)
        try:
            runs = evaluate_specs(searcher.search, collection, specs, warmup=1,
                                  timeout_ms=args.timeout_ms, progress=log.isatty())
        finally:
            searcher.close()
        result = build_result(
            runs, collection=collection.describe(), index=index, url=args.url,
            settings={"run_depth": 100, "drop_identical_ids": True, "warmup": 1,
                      "timeout_ms": args.timeout_ms},
            created=report["created"],
        )
        entry = {"name": name, "index": built, "result": result,
                 "targets": check_targets(name, result["runs"])}
        if args.results_dir:
            args.results_dir.mkdir(parents=True, exist_ok=True)
            (args.results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        if args.write_docs:
            chart = DOCS / f"quality-{name}.png"
            plot(name, result, chart)
            entry["chart"] = chart.name
        report["datasets"].append(entry)
        if not args.json:
            print(f"\n== {name} ==")
            print(_table(name, result, markdown=False))
            for c in entry["targets"]:
                print(f"  [{'pass' if c['pass'] else 'FAIL'}] {c['claim']}: {c['detail']}")
    client.close()
    if args.write_docs:
        write_markdown(report, DOCS / "results.md")
    if args.json:
        print(json.dumps(report, indent=2))
    failed = any(r["failed"] for d in report["datasets"] for r in d["result"]["runs"])
    return 1 if failed else 0


def main_matryoshka(args: argparse.Namespace, argv: list[str] | None) -> int:
    from opensearchpy import OpenSearch
    from osneural.eval.beir import load_beir

    dims = [int(d) for d in args.matryoshka.split(",") if d.strip()]
    client = OpenSearch(hosts=[args.url], timeout=120)
    results = {}
    for name in args.datasets:
        collection = load_beir(args.data_dir / name, "test", limit=args.max_queries)
        results[name] = matryoshka_rows(client, f"{args.index_prefix}{name}", collection, dims,
                                        sys.stderr)
    client.close()
    command = "python bench/quality.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.write_docs:
        replace_block(DOCS / "results.md", "matryoshka", matryoshka_markdown(command, results))
    if args.json:
        print(json.dumps({"command": command, "matryoshka": results}, indent=2))
    else:
        print(matryoshka_markdown(command, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

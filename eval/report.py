"""The evaluation result: its JSON form, the table printed from it, and deltas against an old one.

The JSON is the record of truth (what was measured, on which queries, with which pipeline); the
table is derived from it, so `--compare` works from files alone and results can be compared across
machines and months. A spec that failed on some queries is marked in every view: its metrics are
means over the queries that answered, which is not the same number as a complete run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osneural.errors import EvalError

SCHEMA = "osneural-eval/1"

COLUMNS: tuple[tuple[str, str], ...] = (
    ("ndcg@10", "nDCG@10"),
    ("recall@100", "R@100"),
    ("mrr@10", "MRR@10"),
)
LATENCY_COLUMNS: tuple[tuple[str, str], ...] = (("mean", "mean ms"), ("p95", "p95 ms"))


class ResultFileError(EvalError):
    """A result file given to `--compare` is unreadable or not an osneural eval result."""


@dataclass
class SpecResult:
    """One pipeline's figures on one collection."""

    name: str
    pipeline: dict[str, Any]
    metrics: dict[str, float | None]
    latency_ms: dict[str, float | None]
    queries: int
    evaluated: int
    failed: int
    with_warnings: int = 0
    identical_ids_dropped: int = 0
    retried: int = 0  # transient failures that a later try of the same query got past
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.failed == 0

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["complete"] = self.complete
        if not per_query:
            out.pop("per_query")
        return out


def build_result(
    runs: Sequence[SpecResult],
    *,
    collection: dict[str, Any],
    index: str,
    url: str,
    settings: dict[str, Any],
    created: str,
    per_query: bool = False,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": created,
        "index": index,
        "url": url,
        "collection": collection,
        "settings": settings,
        "runs": [r.to_dict(per_query=per_query) for r in runs],
    }


def load_result(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"{p}: result file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultFileError(f"{p}: not an osneural eval result (expected schema {SCHEMA!r})")
    runs = data.get("runs")
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) for r in runs
    ):
        raise ResultFileError(f"{p}: 'runs' must be a list of objects with a 'name'")
    return data


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _render(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    fmt = [
        (lambda s, w=w: s.ljust(w)) if i == 0 else (lambda s, w=w: s.rjust(w))
        for i, w in enumerate(widths)
    ]
    lines = ["  ".join(f(h) for f, h in zip(fmt, header, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f(c) for f, c in zip(fmt, r, strict=True)) for r in rows]
    return "\n".join(lines)


def _run_label(run: dict[str, Any]) -> str:
    # A trailing * marks a spec that failed on some queries: its means cover fewer queries.
    return run["name"] + ("" if run.get("failed", 0) == 0 else " *")


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    """One row per spec: the metrics, latency, and how many queries failed or degraded."""
    header = ["spec", *(h for _, h in COLUMNS), *(h for _, h in LATENCY_COLUMNS), "failed", "warned"]
    rows = []
    for run in result["runs"]:
        rows.append([
            _run_label(run),
            *(_fmt(run["metrics"].get(k), 4) for k, _ in COLUMNS),
            *(_fmt(run["latency_ms"].get(k), 1) for k, _ in LATENCY_COLUMNS),
            f"{run.get('failed', 0)}/{run.get('queries', 0)}",
            str(run.get("with_warnings", 0)),
        ])
    text = _render(header, rows, markdown)
    notes = _notes(result)
    return text + ("\n" + "\n".join(notes) if notes else "")


def _notes(result: dict[str, Any]) -> list[str]:
    notes = []
    for run in result["runs"]:
        if run.get("failed", 0):
            first = (run.get("errors") or [{}])[0]
            notes.append(
                f"* {run['name']}: {run['failed']} of {run['queries']} queries failed; its figures "
                f"are means over the {run['evaluated']} that answered. First error "
                f"(query {first.get('query_id')}): {first.get('error')}"
            )
    coll = result.get("collection", {})
    if coll.get("unjudged_queries"):
        notes.append(f"{coll['unjudged_queries']} queries without judgments were skipped (as BEIR does).")
    if coll.get("judged_queries_without_text"):
        notes.append(
            f"{coll['judged_queries_without_text']} judged query ids have no text in the queries file."
        )
    if coll.get("qrels_docs_missing_from_corpus"):
        notes.append(
            f"{coll['qrels_docs_missing_from_corpus']} judged documents are absent from the corpus "
            f"(kept in the judgments: they count against recall), e.g. "
            f"{coll.get('missing_doc_examples', [])[:3]}."
        )
    if coll.get("limited_to"):
        notes.append(f"Limited to the first {coll['limited_to']} judged queries.")
    return notes


def _delta(new: Any, old: Any, digits: int) -> str:
    if new is None or old is None:
        return "-"
    return f"{new - old:+.{digits}f}"


def compare(new: dict[str, Any], old: dict[str, Any], markdown: bool = False) -> str:
    """Deltas (new - old) per spec matched by name; specs on one side only are listed as such."""
    header = ["spec", *(f"Δ {h}" for _, h in COLUMNS), *(f"Δ {h}" for _, h in LATENCY_COLUMNS)]
    old_runs = {r["name"]: r for r in old["runs"]}
    rows = []
    notes = []
    for run in new["runs"]:
        before = old_runs.get(run["name"])
        if before is None:
            notes.append(f"{run['name']}: not in the earlier result")
            continue
        rows.append([
            _run_label(run),
            *(
                _delta(run["metrics"].get(k), before.get("metrics", {}).get(k), 4)
                for k, _ in COLUMNS
            ),
            *(
                _delta(run["latency_ms"].get(k), before.get("latency_ms", {}).get(k), 1)
                for k, _ in LATENCY_COLUMNS
            ),
        ])
        if run.get("pipeline") != before.get("pipeline"):
            notes.append(f"{run['name']}: the pipeline spec differs from the earlier run")
        if before.get("failed", 0):
            notes.append(f"{run['name']}: the earlier run had {before['failed']} failed queries")
    names = {r["name"] for r in new["runs"]}
    for name in old_runs:
        if name not in names:
            notes.append(f"{name}: only in the earlier result")
    for key in ("name", "split", "evaluated"):
        a, b = new.get("collection", {}).get(key), old.get("collection", {}).get(key)
        if a != b:
            notes.append(f"collection {key} differs: now {a!r}, earlier {b!r}")
    if not rows:
        notes.insert(0, "no spec name in common with the earlier result")
        return "\n".join(notes)
    return _render(header, rows, markdown) + ("\n" + "\n".join(notes) if notes else "")


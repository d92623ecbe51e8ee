"""Choose the built-in `hybrid` / `hybrid-linear` specs by a rule that does not tune to one collection.

    python bench/defaults.py [--datasets scifact nfcorpus] [--folds 5] [--json] [--write-docs] [--apply]

The rule (issue 17): every candidate pipeline has its free parameters (stage weights, depths, RRF
constant, MaxSim share) fitted by `osneural tune`'s coordinate ascent under 5-fold cross-validation
on each dataset; candidates are ranked per dataset by held-out nDCG@10; the winner has the best mean
rank across datasets, ties going to the simpler pipeline (fewer stages), then to the higher mean
nDCG@10. Pseudo-relevance feedback is tried on top of the best pipeline without it, with its own
parameters fixed in advance (`PRF_VARIANTS`) and the same folds, through real Searcher runs on each
held-out fold; it enters the default only if it wins under the same rule.

The shipped spec is the winner fitted on both datasets' queries together (each dataset weighing the
same); its scores on those queries are in-sample and printed as such. The held-out table is the
evidence. `hybrid-linear` is the best candidate with linear fusion and no MaxSim: the pipeline for
indexes without token embeddings.

The indexes are the ones `bench/quality.py` builds (`osneural-quality-<dataset>`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from _data import beir_root  # noqa: E402
from quality import replace_block  # noqa: E402

SPECS_DIR = REPO / "plugin" / "specs"
DOCS = REPO / "docs" / "results.md"
BLOCK = "defaults"


@dataclass(frozen=True)
class Family:
    """A candidate pipeline: which coordinates are free and which are pinned."""

    name: str
    fusion: str
    normalization: str = "minmax"
    maxsim: bool = False

    @property
    def complexity(self) -> int:
        return 3 + int(self.maxsim)  # three first stages (weights may drop some), + rescoring


FAMILIES = [
    Family("rrf", "rrf"),
    Family("rrf +maxsim", "rrf", maxsim=True),
    Family("linear minmax", "linear", "minmax"),
    Family("linear minmax +maxsim", "linear", "minmax", maxsim=True),
    Family("linear zscore", "linear", "zscore"),
    Family("linear zscore +maxsim", "linear", "zscore", maxsim=True),
]

#: PRF stages tried on the best pipeline without PRF; parameters fixed before any run (the
#: literature's: 3 feedback documents, Rocchio beta 0.5; ColBERT-PRF 24 clusters, 10 expansions).
PRF_VARIANTS: dict[str, dict[str, Any]] = {
    "+prf dense": {"type": "prf", "mode": "dense", "fb_docs": 3, "alpha": 1.0, "beta": 0.5,
                   "k": 100, "num_candidates": 200, "fusion": "linear", "weight": 0.3},
    "+prf multivector": {"type": "prf", "mode": "multivector", "fb_docs": 3, "clusters": 24,
                         "expansion": 10, "beta": 0.5, "window": 50},
}


def family_space(family: Family, rounds: int) -> Any:
    from osneural.eval.tune import SearchSpace

    space = SearchSpace(fusions=(family.fusion,), normalizations=(family.normalization,),
                        rank_constants=(10, 30, 60, 100), weights=(0.0, 0.5, 1.0, 1.5, 2.0),
                        rounds=rounds)
    if not family.maxsim:
        space = replace(space, maxsim_weights=(0.0,))
    else:
        space = replace(space, maxsim_weights=(0.1, 0.2, 0.3, 0.4, 0.5))
    return space


class PooledScorer:
    """Mean over datasets of each dataset's mean nDCG@10 (ids are `dataset/qid`), so a fit on
    both weighs each collection the same, whatever its query count."""

    def __init__(self, scorers: dict[str, Any]) -> None:
        self.scorers = scorers

    def mean(self, config: Any, qids: list[str]) -> float:
        groups: dict[str, list[str]] = {}
        for item in qids:
            ds, _, qid = item.partition("/")
            groups.setdefault(ds, []).append(qid)
        return sum(self.scorers[ds].mean(config, ids) for ds, ids in groups.items()) / len(groups)


def load_cache(folder: Path | None, ds: str, collection: Any) -> Any:
    """A RunCache saved by `save_cache` for the same queries, or None."""
    import pickle

    from osneural.eval.tune import RunCache

    path = folder / f"{ds}.pickle" if folder else None
    if path is None or not path.exists():
        return None
    data = pickle.loads(path.read_bytes())
    if set(data["stage_runs"]) != set(collection.queries):
        return None
    return RunCache(queries=dict(collection.queries), stage_runs=data["stage_runs"],
                    maxsim_stage=data["maxsim_stage"], maxsim=data["maxsim"])


def save_cache(folder: Path | None, ds: str, cache: Any) -> None:
    import pickle

    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ds}.pickle").write_bytes(pickle.dumps(
        {"stage_runs": cache.stage_runs, "maxsim": cache.maxsim,
         "maxsim_stage": cache.maxsim_stage}))


def prf_spec(base_spec: dict[str, Any], prf: dict[str, Any]) -> dict[str, Any] | None:
    """`base_spec` with the PRF stage placed before MaxSim (MaxSim then rescores its output)."""
    spec = json.loads(json.dumps(base_spec))
    rescore = spec.get("rescore", [])
    if prf["mode"] == "multivector" and not any(r["type"] == "maxsim" for r in rescore):
        return None
    spec["rescore"] = [prf, *rescore]
    return spec


def run_prf_cv(searcher: Any, collection: Any, base: Any, configs: list[Any],
               folds: list[list[str]], prf: dict[str, Any], window: int,
               log: Any) -> dict[str, float] | None:
    """Held-out nDCG@10 per query of (the fold's config + PRF), by real Searcher runs; `configs`
    holds each fold's fitted configuration (or the same unfitted one for every fold)."""
    from osneural.eval.runner import RetryPolicy, search_with_retries
    from osneural.eval.tune import config_spec, query_ndcg
    from osneural.plugin.spec import parse_spec

    scores: dict[str, float] = {}
    for n, (part, config) in enumerate(zip(folds, configs, strict=True), start=1):
        spec = prf_spec(config_spec(base, config, window).to_dict(), prf)
        if spec is None:
            return None
        spec.update({"size": 100, "_source": False, "timeout_ms": 30_000})
        parsed = parse_spec(spec)
        for qid in part:
            resp, _ = search_with_retries(searcher.search, collection.queries[qid], parsed,
                                          RetryPolicy())
            ranked = [h["_id"] for h in resp["hits"]["hits"]]
            scores[qid] = query_ndcg(ranked, qid, collection.qrels[qid], True)
        print(f"  {prf['mode']} prf fold {n}: done", file=log, flush=True)
    return scores


def compact(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every value at its default left out (but each part's `type`), as the
    built-in files are written: short, and a later change of a default reaches them."""
    from osneural.plugin.spec import parse_spec

    parsed = parse_spec(spec)

    def part(model: Any) -> dict[str, Any]:
        return {"type": model.type, **model.model_dump(exclude_defaults=True)}

    out: dict[str, Any] = {"first_stages": [part(s) for s in parsed.first_stages],
                           "fusion": part(parsed.fusion)}
    if parsed.rescore:
        out["rescore"] = [part(r) for r in parsed.rescore]
    out["size"] = parsed.size
    if parse_spec(out).to_dict() != parsed.to_dict():  # pragma: no cover - a defaults bug
        raise AssertionError("compact spec does not round-trip")
    return out


def rank_candidates(table: dict[str, dict[str, float]], complexity: dict[str, int]) -> list[dict]:
    """Per-dataset ranks (1 = best held-out nDCG@10), mean rank, ties to the simpler, then higher."""
    datasets = sorted({ds for row in table.values() for ds in row})
    ranks: dict[str, dict[str, int]] = {name: {} for name in table}
    for ds in datasets:
        order = sorted(table, key=lambda n: -table[n][ds])
        for n in table:
            # equal scores share the better rank
            ranks[n][ds] = 1 + sum(1 for m in order if table[m][ds] > table[n][ds] + 1e-12)
    rows = []
    for name in table:
        mean_rank = sum(ranks[name].values()) / len(datasets)
        mean_ndcg = sum(table[name].values()) / len(datasets)
        rows.append({"name": name, "ranks": ranks[name], "mean_rank": mean_rank,
                     "mean_ndcg@10": mean_ndcg, "complexity": complexity[name],
                     "ndcg@10": table[name]})
    rows.sort(key=lambda r: (r["mean_rank"], r["complexity"], -r["mean_ndcg@10"]))
    return rows


def markdown(report: dict[str, Any]) -> str:
    ds = report["datasets"]
    out = [
        "## Choosing the default pipeline (issue 17)",
        "",
        "Produced by:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Measured {report['created']}. The rule: each candidate's weights, depths, RRF constant "
        f"and MaxSim share are fitted by `osneural tune` (coordinate ascent over cached Searcher "
        f"runs) under {report['folds']}-fold cross-validation per dataset; the table gives "
        "held-out nDCG@10 (every query scored by a fit that never saw it). Candidates are ranked "
        "per dataset; the default is the best mean rank, ties to the simpler pipeline, then the "
        "higher mean. PRF variants run on top of the best pipeline without PRF, with parameters "
        "fixed in advance, on the same folds, through real Searcher runs.",
        "",
        "| candidate | " + " | ".join(f"{d} nDCG@10" for d in ds) + " | "
        + " | ".join(f"{d} rank" for d in ds) + " | mean rank |",
        "|---|" + "---:|" * (2 * len(ds) + 1),
    ]
    for row in report["ranking"]:
        out.append(f"| {row['name']} | " + " | ".join(f"{row['ndcg@10'][d]:.4f}" for d in ds)
                   + " | " + " | ".join(str(row["ranks"][d]) for d in ds)
                   + f" | {row['mean_rank']:.1f} |")
    out += ["", "\"as is\" rows keep the base spec's parameters (equal weights, k=100, MaxSim "
            "share 0.2): nothing is fitted, so their score over every query is already held-out. "
            "`rrf +maxsim, as is` is the previous built-in `hybrid`. \"fitted\" rows are fitted "
            "per fold on the other folds' queries.", ""]
    win = report["winner"]
    fitted = win.get("pooled_in_sample") is not None
    how = ("after a fit on every dataset's queries (each dataset weighing the same)" if fitted
           else "with the base spec's own parameters (nothing fitted)")
    out += [f"Winner: **{win['name']}**, as the `hybrid` spec {how}:", "", "```json",
            json.dumps(win["spec"]), "```", ""]
    if report.get("linear"):
        out += [f"`hybrid-linear` (best linear fusion without MaxSim): "
                f"**{report['linear']['name']}**:", "",
                "```json", json.dumps(report["linear"]["spec"]), "```", ""]
    if report.get("shipped_scores"):
        note = ("in-sample: these queries fitted it; the held-out figures above are the ones to "
                "quote" if fitted else "a real Searcher run; nothing was fitted, so it is "
                "held-out and should equal the table's figure")
        out += [f"That spec over every test query ({note}): "
                + ", ".join(f"{d} {v:.4f}" for d, v in report["shipped_scores"].items()) + ".",
                ""]
    goal = report.get("goal", {})
    if goal:
        out += ["Goal (SciFact >= 0.75, NFCorpus >= 0.37 nDCG@10): "
                + ", ".join(f"{d} held-out {v['held_out']:.4f} "
                            f"({'reached' if v['reached'] else 'not reached'})"
                            for d, v in goal.items()) + ".", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--data-dir", type=Path, default=beir_root())
    ap.add_argument("--url", default=os.environ.get("OSNEURAL_OPENSEARCH_URL", "http://127.0.0.1:9200"))
    ap.add_argument("--index-prefix", default="osneural-quality-")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-queries", type=int)
    ap.add_argument("--no-prf", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-docs", action="store_true", help="write the block in docs/results.md")
    ap.add_argument("--apply", action="store_true", help="write plugin/specs/hybrid*.json")
    ap.add_argument("--out", type=Path, help="save the JSON report here")
    ap.add_argument("--cache", type=Path, metavar="DIR",
                    help="keep each dataset's cached first-stage runs and MaxSim scores here "
                         "(a rerun with the same queries and base spec reuses them)")
    ap.add_argument("--from-json", type=Path, metavar="FILE",
                    help="no runs: render / apply a report an earlier run saved with --out")
    args = ap.parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        return finish(report, args)

    from osneural.eval.beir import load_beir
    from osneural.eval.runner import evaluate_spec
    from osneural.eval.tune import (
        Scorer,
        base_config,
        build_cache,
        config_spec,
        cross_validate,
        fit,
        make_folds,
        pin_start,
    )
    from osneural.plugin import Searcher, load_spec, parse_spec

    from osneural.connection import ClusterConfig

    log = sys.stderr
    client = ClusterConfig.from_values(args.url, timeout=120).client()
    base = load_spec("hybrid")
    window = 100
    table: dict[str, dict[str, float]] = {}
    # Each family twice: its parameters fitted under CV, and as the base spec has them (equal
    # weights, k=100, MaxSim at 0.2) -- nothing fitted, so its score over all queries is held-out
    # by construction. Fitting counts as complexity: at equal rank the unfitted row wins.
    complexity: dict[str, float] = {}
    family_of: dict[str, Family] = {}
    fold_configs: dict[str, dict[str, list[Any]]] = {}
    base_scores: dict[str, float] = {}
    cvs: dict[str, dict[str, Any]] = {}
    scorers: dict[str, Any] = {}
    searchers: dict[str, Any] = {}
    collections: dict[str, Any] = {}
    for ds in args.datasets:
        index = f"{args.index_prefix}{ds}"
        collection = load_beir(args.data_dir / ds, "test", check_corpus=False,
                               limit=args.max_queries)
        collections[ds] = collection
        searcher = searchers[ds] = Searcher(client, index)
        t0 = time.perf_counter()
        space0 = family_space(FAMILIES[1], args.rounds)
        cache = load_cache(args.cache, ds, collection)
        if cache is None:
            cache = build_cache(searcher, collection, base, space0, maxsim=True,
                                progress=log.isatty())
        cache.score_ids = searcher.rescore_ids
        if cache.failed:
            print(f"{ds}: {len(cache.failed)} queries failed: {next(iter(cache.failed.items()))}",
                  file=log)
            return 1
        print(f"{ds}: first stages cached for {len(cache.stage_runs)} queries in "
              f"{time.perf_counter() - t0:.0f} s", file=log, flush=True)
        scorer = scorers[ds] = Scorer(cache, collection.qrels, window)
        qids = sorted(cache.stage_runs)
        for family in FAMILIES:
            t0 = time.perf_counter()
            space = family_space(family, args.rounds)
            start = pin_start(base_config(base, space), space)
            cv = cross_validate(scorer, qids, start, space, args.folds, seed=0)
            cvs.setdefault(family.name, {})[ds] = cv
            fitted, as_is = f"{family.name}, fitted", f"{family.name}, as is"
            table.setdefault(fitted, {})[ds] = cv.held_out_mean
            table.setdefault(as_is, {})[ds] = cv.base_mean
            complexity[fitted], complexity[as_is] = family.complexity + 0.5, family.complexity
            family_of[fitted] = family_of[as_is] = family
            fold_configs.setdefault(fitted, {})[ds] = [f.config for f in cv.folds]
            fold_configs.setdefault(as_is, {})[ds] = [start] * args.folds
            base_scores[ds] = cv.base_mean
            print(f"{ds}: {family.name}: held-out {cv.held_out_mean:.4f} (base "
                  f"{cv.base_mean:.4f}) in {time.perf_counter() - t0:.0f} s, MaxSim docs "
                  f"scored so far {cache.fetched}", file=log, flush=True)
        save_cache(args.cache, ds, cache)

    ranking = rank_candidates(table, complexity)
    best_plain = ranking[0]["name"]
    if not args.no_prf:
        for label, prf in PRF_VARIANTS.items():
            name = f"{best_plain} {label}"
            row: dict[str, float] = {}
            for ds in args.datasets:
                qids = sorted(scorers[ds].cache.stage_runs)
                folds = make_folds(qids, args.folds, seed=0)
                t0 = time.perf_counter()
                scores = run_prf_cv(searchers[ds], collections[ds], base,
                                    fold_configs[best_plain][ds], folds, prf, window, log)
                if scores is None:
                    break
                row[ds] = sum(scores.values()) / len(scores)
                print(f"{ds}: {name}: held-out {row[ds]:.4f} in {time.perf_counter() - t0:.0f} s",
                      file=log, flush=True)
            if len(row) == len(args.datasets):
                table[name] = row
                complexity[name] = complexity[best_plain] + 1
                family_of[name] = family_of[best_plain]
        ranking = rank_candidates(table, complexity)

    def fit_pooled(family: Family) -> dict[str, Any]:
        space = family_space(family, args.rounds)
        start = pin_start(base_config(base, space), space)
        qids = [f"{ds}/{q}" for ds in args.datasets for q in sorted(scorers[ds].cache.stage_runs)]
        fitted = fit(PooledScorer(scorers), qids, start, space)
        return {"config": asdict(fitted.config), "in_sample": fitted.train_ndcg,
                "spec": config_spec(base, fitted.config, window).to_dict()}

    def as_shipped(name: str) -> dict[str, Any]:
        """The spec a candidate stands for: the pooled fit for a fitted row, the base's own
        parameters for an as-is row, plus its PRF stage."""
        family = family_of[name]
        if ", fitted" in name:
            out = fit_pooled(family)
        else:
            space = family_space(family, args.rounds)
            start = pin_start(base_config(base, space), space)
            out = {"config": asdict(start), "in_sample": None,
                   "spec": config_spec(base, start, window).to_dict()}
        label = next((lab for lab in PRF_VARIANTS if name.endswith(lab)), None)
        if label:
            out["spec"] = parse_spec(prf_spec(out["spec"], PRF_VARIANTS[label])).to_dict()
        return out

    winner = ranking[0]
    shipped = as_shipped(winner["name"])
    linear_rows = [r for r in ranking if r["name"] in family_of
                   and family_of[r["name"]].fusion == "linear"
                   and not family_of[r["name"]].maxsim and "+prf" not in r["name"]]
    linear = None
    if linear_rows:
        linear = as_shipped(linear_rows[0]["name"])
        linear["name"] = linear_rows[0]["name"]


    shipped_scores = {}
    for ds in args.datasets:
        res = evaluate_spec(searchers[ds].search, collections[ds], parse_spec(shipped["spec"]),
                            "hybrid", warmup=1, timeout_ms=30_000)
        shipped_scores[ds] = res.metrics["ndcg@10"]
    for s in searchers.values():
        s.close()
    client.close()

    goal_targets = {"scifact": 0.75, "nfcorpus": 0.37}
    report = {
        "command": "python bench/defaults.py " + " ".join(shlex.quote(a) for a in
                                                          (argv if argv is not None else sys.argv[1:])),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "folds": args.folds,
        "datasets": args.datasets,
        "ranking": ranking,
        "base": base_scores,
        "winner": {"name": winner["name"], "spec": compact(shipped["spec"]),
                   "config": shipped["config"], "pooled_in_sample": shipped["in_sample"]},
        "linear": None if linear is None else {"name": linear["name"],
                                               "spec": compact(linear["spec"])},
        "shipped_scores": shipped_scores,
        "goal": {ds: {"held_out": table[winner["name"]][ds],
                      "reached": table[winner["name"]][ds] >= goal_targets[ds]}
                 for ds in args.datasets if ds in goal_targets},
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return finish(report, args)


def finish(report: dict[str, Any], args: argparse.Namespace) -> int:
    """Write the specs (--apply) and the docs block (--write-docs), print the report."""
    if args.apply:
        (SPECS_DIR / "hybrid.json").write_text(json.dumps(report["winner"]["spec"], indent=2) + "\n")
        if report.get("linear"):
            (SPECS_DIR / "hybrid-linear.json").write_text(
                json.dumps(report["linear"]["spec"], indent=2) + "\n")
    if args.write_docs:
        replace_block(DOCS, BLOCK, markdown(report))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

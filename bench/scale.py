"""The cost curve with N: bytes/doc, bulk docs/s, refresh/merge time, query latency, nDCG@10.

    nice -n 10 python bench/scale.py --sizes 10000,100000 [--url http://127.0.0.1:9400] \
        [--source-url http://127.0.0.1:9200] [--json] [--write-docs]

Run it against a node of its own (`osneural opensearch --name scale --port 9400 --heap 2g
start`, stop it afterwards): it grows one index, `osneural-scale`, through every size in
`--sizes`, and measures after each step.

Documents. SciFact's real corpus (5,183 documents) is always inside, read with its stored
representations from `--source-index` (a `bench/quality.py` index, which keeps the pooled token
vectors as float16), so its 300 test queries give nDCG@10 at every N. Encoding a million texts is
out of reach on two cores, so the rest are distractors synthesized in representation space:
distractor i mixes 3 real documents drawn at random (seeded by i, so every size's set contains
the smaller ones') with Dirichlet(2) weights w. Its token set takes ~w_j of parent j's tokens (a
real document's length in total); dense = normalize(sum w_j dense_j); sparse = sum w_j sparse_j
cut to the dominant parent's term count; BM25 text and title are w_j shares of the parents'
sentences and title words. Binary codes, MIH terms, dense PQ, token PQ codes and the MUVERA FDE
are then computed from those with the source index's own codecs, exactly as ingestion would.
The report prints how close distractors come to real documents (cosine to the nearest real
one) beside the same figure for real documents, so their realism can be judged.

Measured at each N, after the step's bulk load: bulk docs/s (client wall time of the bulk calls,
synthesis excluded), refresh time, force-merge-to-one-segment time, bytes per document by
Lucene file kind from `_stats` (vectors = `dense` + `fde`; doc values = `bin_code`, `dense_pq`,
`mv_codes`; postings = text, sparse, binary terms; stored = `_source`) -- a whole index cannot
be split by field (see `bench/index_size.py` for that, on the real corpus) --, the same as
loaded, before the merge (`fresh`), the node's heap used and resident set (`node`), and for every
built-in spec and the `sparse` first stage alone the query latency p50/p95 and nDCG@10 over
SciFact's test queries: one query at a time from this process (`queries`), then from
`--clients` client processes through `osneural serve --workers` (`concurrent`, with queries/s).
Queries run on the index as loaded (the segments the merge policy left, as a live index serves
them), before the force merge, which at 1M takes about an hour. The index gets the layout
`osneural ingest` gives a new index today (vectors out of `_source` beside the token codes),
whatever the source index's age. Growth exponents are least-squares slopes of log(quantity) against log(N) over the sizes
measured; the 10M/100M projection multiplies per-document bytes and states its assumptions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osneural.eval.benchkit import KINDS, REPO, beir_dir, measure_index, stored_documents

INDEX = "osneural-scale"
BUILTIN_SPECS = ("bm25", "dense", "binary", "multivector", "hybrid", "hybrid-linear")
#: first stages that no built-in spec runs alone, as inline specs under a name of their own
INLINE_SPECS: dict[str, dict[str, Any]] = {
    "sparse": {"first_stages": [{"type": "sparse"}], "size": 10},
}
DEFAULT_SPECS = ("bm25", "dense", "sparse", "binary", "multivector", "hybrid", "hybrid-linear")


def spec_of(name: str) -> Any:
    """What `ext.osneural.spec` and `parse_spec` take for a scale spec name: a built-in's
    name, or an inline spec object."""
    return INLINE_SPECS.get(name, name)


@dataclass
class RealCorpus:
    """The real documents' stored representations, held once (tokens as float16)."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    dense: np.ndarray  # float32 [n, dim]
    sparse: list[dict[str, float]]
    tokens: list[np.ndarray]  # float16 [t_i, dim]

    def __len__(self) -> int:
        return len(self.ids)


def load_real(client: Any, index: str) -> RealCorpus:
    props = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    dim = int(props["dense"]["dimension"])
    ids, titles, texts, dense, sparse, tokens = [], [], [], [], [], []
    for d in stored_documents(client, index, dim):
        if d["tokens"] is None or d["dense"] is None:
            raise SystemExit(f"{index}: document {d['id']!r} lacks dense or float16 tokens")
        ids.append(d["id"])
        titles.append(d["title"])
        texts.append(d["text"])
        dense.append(d["dense"])
        sparse.append(d["sparse"] or {})
        tokens.append(d["tokens"].astype(np.float16))
    return RealCorpus(ids, titles, texts, np.asarray(dense, dtype=np.float32), sparse, tokens)


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _share(items: list[Any], frac: float, rng: np.random.Generator) -> list[Any]:
    """About `frac` of `items` (at least one when there are any), in their original order."""
    if not items:
        return []
    k = min(len(items), max(1, round(frac * len(items))))
    return [items[i] for i in np.sort(rng.choice(len(items), k, replace=False))]


def distractor(real: RealCorpus, i: int, seed: int) -> dict[str, Any]:
    """Distractor `i`: a mixture of 2-3 random real documents (see the module docstring)."""
    rng = np.random.default_rng([seed, i])
    k = 3
    parents = rng.choice(len(real), k, replace=False)
    # Dirichlet(2): a dominant parent rarely takes more than ~0.8, so a distractor is not a
    # near-copy of one real document (Dirichlet(1) over 2-3 parents put the p90 cosine to the
    # nearest real document at 0.996; real documents' own nearest neighbour sits at 0.79).
    w = np.sort(rng.dirichlet(np.full(k, 2.0)))[::-1]
    length = len(real.tokens[parents[0]])
    rows = []
    for p, wj in zip(parents, w, strict=True):
        toks = real.tokens[p]
        take = min(len(toks), max(1, round(wj * length)))
        rows.append(toks[np.sort(rng.choice(len(toks), take, replace=False))])
    tokens = np.concatenate(rows).astype(np.float32)
    dense = (w[:, None] * real.dense[parents]).sum(axis=0)
    dense /= max(float(np.linalg.norm(dense)), 1e-12)
    mixed: dict[str, float] = {}
    for p, wj in zip(parents, w, strict=True):
        for term, x in real.sparse[p].items():
            mixed[term] = mixed.get(term, 0.0) + float(wj) * float(x)
    n_terms = max(1, len(real.sparse[parents[0]]))
    sparse = dict(sorted(mixed.items(), key=lambda kv: (-kv[1], kv[0]))[:n_terms])
    text = " ".join(s for p, wj in zip(parents, w, strict=True)
                    for s in _share(_SENTENCE.split(real.texts[p]), float(wj), rng))
    title = " ".join(t for p, wj in zip(parents, w, strict=True)
                     for t in _share(real.titles[p].split(), float(wj), rng))
    return {"id": f"distractor-{i}", "title": title, "text": text, "dense": dense.astype(np.float32),
            "sparse": sparse, "tokens": tokens}


def encoded_actions(docs: list[dict[str, Any]], bundle: Any, index: str) -> list[dict[str, Any]]:
    """Bulk actions for documents given by their raw representations, through the ingestion's
    codecs and document builder."""
    from osneural.ingest.corpus import CorpusDocument
    from osneural.ingest.documents import EncodedBatch, build_documents

    from osneural.codecs import code_tokens

    dense = np.stack([d["dense"] for d in docs]).astype(np.float32)
    tokens = [np.asarray(d["tokens"], dtype=np.float32) for d in docs]
    codes = bundle.binary.encode(dense)
    enc = EncodedBatch(
        dense=dense, sparse=[d["sparse"] for d in docs], bin_code=codes,
        bin_tokens=code_tokens(codes, int(bundle.params["mih_m"]), n_bits=bundle.binary.n_bits),
        dense_pq=bundle.pq_dense.encode(dense),
        mv_codes=[np.ascontiguousarray(bundle.token_codec.encode(t)).view(np.uint8)
                  for t in tokens],  # PQ [t, M] or bit-code rows, as ingestion stores them
        fde=bundle.fde.encode_documents(tokens),
    )
    corpus_docs = [CorpusDocument(id=d["id"], title=d["title"], text=d["text"]) for d in docs]
    return build_documents(corpus_docs, enc, index=index)


def create_index(client: Any, source_client: Any, source: str, bundle: Any,
                 recovery_source: bool = True) -> None:
    """`INDEX` with the source's default-representation mapping, `_meta` and codecs."""
    from osneural.ingest.codec_store import delete_codecs, new_generation, save_codecs
    from osneural.mappings import KNN_DERIVED_SOURCE, vectors_out_of_source

    mapping = source_client.indices.get_mapping(index=source)[source]["mappings"]
    mapping["properties"].pop("mv_f16", None)
    excludes = [f for f in (mapping.get("_source") or {}).get("excludes", []) if f != "mv_f16"]
    mapping["_source"] = {"excludes": excludes}
    # The bulky fields stay out of `_recovery_source`, which OpenSearch otherwise keeps (the
    # whole original document) until the soft-deletes retention window passes: the figures are
    # then close to a merged index's steady state (see bench/index_size.py).
    mapping["_source"]["recovery_source_excludes"] = ["mv_codes", "dense", "fde"]
    if not recovery_source:
        # OpenSearch keeps the full original document as `_recovery_source` until the
        # soft-deletes retention window has passed, then prunes it in merges, so a fresh index
        # holds mv_codes and the vectors' JSON twice. Turning it off would show the steady state,
        # but on 3.6 with the k-NN derived source it makes `_source.excludes` ineffective
        # (mv_codes lands in `_source`, checked on a 2-field index), so it is opt-in only.
        mapping["_source"]["recovery_source_enabled"] = False
    meta = mapping.get("_meta", {}).get("osneural", {})
    meta["representations"] = [r for r in meta.get("representations", []) if r != "float_tokens"]
    generation = new_generation()  # the query side accepts codecs of this build only
    meta["codec_generation"] = generation
    mapping["_meta"] = {"osneural": meta}
    settings = source_client.indices.get_settings(index=source, flat_settings=True)[source]["settings"]
    body_settings = {k: v for k, v in settings.items() if k.startswith("index.knn")}
    body_settings.update({"index.number_of_shards": 1, "index.number_of_replicas": 0,
                          "index.refresh_interval": "-1"})
    # The layout `osneural ingest` gives a new index today, whatever the source index's age
    # (the k-NN plugin writes its derived-source setting into every index it creates).
    body_settings.pop(f"index.{KNN_DERIVED_SOURCE}", None)
    layout: dict[str, Any] = {"settings": {"index": {}}, "mappings": mapping}
    vectors_out_of_source(layout)
    body_settings.update({f"index.{k}": v for k, v in layout["settings"]["index"].items()})
    if client.indices.exists(index=INDEX):
        client.indices.delete(index=INDEX)
    delete_codecs(client, INDEX)
    save_codecs(client, INDEX, bundle, generation=generation)
    client.indices.create(index=INDEX, body={"settings": body_settings, "mappings": mapping})


def load_step(client: Any, docs: Iterator[dict[str, Any]], bundle: Any, batch: int,
              log: Any) -> dict[str, float]:
    """Bulk-load `docs` in batches; wall times of synthesis+coding and of the bulk calls."""
    from opensearchpy import helpers

    synth = bulk = 0.0
    n = 0
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal synth, bulk, n, chunk
        t0 = time.perf_counter()
        actions = encoded_actions(chunk, bundle, INDEX)
        t1 = time.perf_counter()
        helpers.bulk(client, actions, chunk_size=len(actions), max_chunk_bytes=64 << 20,
                     request_timeout=600, max_retries=8, initial_backoff=2)
        t2 = time.perf_counter()
        synth += t1 - t0
        bulk += t2 - t1
        n += len(chunk)
        chunk = []
        if n % (batch * 20) == 0:
            print(f"  {n} docs loaded ({n / bulk:.0f} docs/s bulk)", file=log, flush=True)

    t_gen = 0.0
    it = iter(docs)
    while True:
        t0 = time.perf_counter()
        doc = next(it, None)
        t_gen += time.perf_counter() - t0
        if doc is None:
            break
        chunk.append(doc)
        if len(chunk) == batch:
            flush()
    if chunk:
        flush()
    return {"docs": n, "synth_seconds": synth + t_gen, "bulk_seconds": bulk,
            "bulk_docs_per_s": n / bulk if bulk else 0.0}


def query_step(client: Any, specs: list[str], max_queries: int | None, log: Any) -> list[dict]:
    """nDCG@10 and latency of every spec over SciFact's test queries, one query at a time."""
    from osneural.eval.beir import load_beir
    from osneural.eval.runner import evaluate_specs
    from osneural.plugin.resources import ResourceCache, default_cache
    from osneural.plugin.searcher import Searcher
    from osneural.plugin.spec import parse_spec

    collection = load_beir(beir_dir("scifact"), "test", limit=max_queries)
    cache = ResourceCache(default_cache().encoders)  # fresh index layout, warm encoders
    searcher = Searcher(client, INDEX, cache=cache)
    try:
        parsed = [(s, parse_spec(spec_of(s)), "inline" if s in INLINE_SPECS else "built-in")
                  for s in specs]
        runs = evaluate_specs(searcher.search, collection, parsed, warmup=1, timeout_ms=60_000)
    finally:
        searcher.close()
    out = []
    for r in runs:
        out.append({"spec": r.name, "ndcg@10": r.metrics.get("ndcg@10"),
                    "recall@100": r.metrics.get("recall@100"),
                    "p50_ms": r.latency_ms.get("p50"), "p95_ms": r.latency_ms.get("p95"),
                    "mean_ms": r.latency_ms.get("mean"), "queries": r.evaluated,
                    "failed": r.failed})
        print(f"  {r.name:<14} nDCG@10 {out[-1]['ndcg@10']:.4f}  p50 {out[-1]['p50_ms']:.0f} ms"
              f"  p95 {out[-1]['p95_ms']:.0f} ms  failed {r.failed}", file=log, flush=True)
    return out


def concurrent_step(pool: Any, base: str, specs: list[str], clients: int,
                    max_queries: int | None, log: Any) -> list[dict]:
    """p50/p95, queries/s and nDCG@10 of every spec with `clients` client processes sending
    SciFact's test queries to `osneural serve --workers` (what an application sees under load;
    the clients are processes, so this script's GIL is not what is measured)."""
    from osneural.eval.beir import load_beir
    from osneural.eval.benchkit import ndcg10, pct
    from peer import serve_target

    collection = load_beir(beir_dir("scifact"), "test", limit=max_queries)
    queries = dict(collection.queries)
    warm = dict(list(queries.items())[:clients])
    out = []
    for name in specs:
        target = serve_target(base, INDEX, spec_of(name))
        pool.run(target, warm, clients)
        ids, lat, secs, _timings = pool.run(target, queries, clients)
        p50, p95 = pct(lat)
        out.append({"spec": name, "clients": clients, "p50_ms": p50, "p95_ms": p95,
                    "qps": len(lat) / secs, "ndcg@10": ndcg10(ids, collection.qrels),
                    "queries": len(lat)})
        print(f"  {name:<14} {clients} clients: p50 {p50:.0f} ms  p95 {p95:.0f} ms  "
              f"{out[-1]['qps']:.1f} q/s  nDCG@10 {out[-1]['ndcg@10']:.4f}", file=log, flush=True)
    return out


def node_memory(client: Any) -> dict[str, Any]:
    """Heap used / committed (after a step, no GC forced) and the resident set of the node, read
    from `/proc` when the node runs on this machine (None otherwise)."""
    stats = client.nodes.stats(metric="jvm")["nodes"]
    info = client.nodes.info(metric="process")["nodes"]
    node_id = next(iter(stats))
    mem = stats[node_id]["jvm"]["mem"]
    rss = None
    pid = info.get(node_id, {}).get("process", {}).get("id")
    status = Path(f"/proc/{pid}/status")
    if pid and status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = round(int(line.split()[1]) / 1024, 1)
    return {"heap_used_mb": round(mem["heap_used_in_bytes"] / 2**20, 1),
            "heap_committed_mb": round(mem["heap_committed_in_bytes"] / 2**20, 1), "rss_mb": rss}


def realism(real: RealCorpus, seed: int, n: int = 500) -> dict[str, float]:
    """Cosine of dense vectors to the nearest real document: distractors against real ones."""
    rng = np.random.default_rng(seed + 1)
    idx = rng.choice(len(real), min(n, len(real)), replace=False)
    sims = real.dense[idx] @ real.dense.T
    sims[np.arange(len(idx)), idx] = -1.0  # not itself
    real_nn = sims.max(axis=1)
    dis = np.stack([distractor(real, int(i), seed)["dense"] for i in range(n)])
    dis_nn = (dis @ real.dense.T).max(axis=1)
    return {"real_nn_cos_mean": float(real_nn.mean()), "real_nn_cos_p90": float(np.quantile(real_nn, 0.9)),
            "distractor_nn_cos_mean": float(dis_nn.mean()),
            "distractor_nn_cos_p90": float(np.quantile(dis_nn, 0.9))}


def slope(ns: list[int], ys: list[float | None]) -> float | None:
    """Least-squares exponent b of y ~ a N^b (None with fewer than two positive points)."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys, strict=True) if y and y > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def project(step: dict[str, Any], targets: tuple[int, ...], shard_gb: float, node_ram_gb: float,
            node_disk_gb: float, replicas: int) -> list[dict[str, Any]]:
    """Disk, vector RAM, shards and nodes at `targets` from the largest step's bytes per doc.

    Vectors (`.vec`/`.vex`: raw vectors plus HNSW graph) must sit in the page cache for HNSW
    search to stay fast, so vector RAM is per-document vector bytes times N times copies; disk
    is every byte times copies. Nodes: the larger of RAM- and disk-bound counts.
    """
    per_doc = step["bytes_per_doc"]
    vec_per_doc = step["by_kind_per_doc"]["vectors"]
    copies = 1 + replicas
    out = []
    for n in targets:
        disk = per_doc * n / 1e9
        ram = vec_per_doc * n / 1e9
        shards = max(1, math.ceil(disk / shard_gb))
        nodes = max(math.ceil(ram * copies / node_ram_gb), math.ceil(disk * copies / node_disk_gb), 1)
        out.append({"docs": n, "primary_disk_gb": disk, "disk_with_replicas_gb": disk * copies,
                    "vector_ram_gb": ram, "vector_ram_with_replicas_gb": ram * copies,
                    "primary_shards": shards, "nodes": nodes})
    return out


def write_markdown(report: dict[str, Any], path: Path) -> None:
    steps = report["steps"]
    ns = [s["docs"] for s in steps]
    out = ["# Scale: the cost curve with N", "", "Produced by:", "", "```", report["command"], "```",
           "", f"Measured {report['created']} on {report['machine']}; OpenSearch "
           f"{report['opensearch']} at {report['url']} (one node, heap {report.get('heap', '?')}, "
           "one shard, no replica), shared with other work, so read latencies as relative. "
           f"Real documents: SciFact's {report['real_docs']} from `{report['source_index']}`; "
           "the rest are synthesized distractors (see `bench/scale.py`).", ""]
    r = report["realism"]
    out += [f"Distractor realism: mean cosine to the nearest real document {r['distractor_nn_cos_mean']:.3f} "
            f"(p90 {r['distractor_nn_cos_p90']:.3f}); real documents to their nearest other real one "
            f"{r['real_nn_cos_mean']:.3f} (p90 {r['real_nn_cos_p90']:.3f}).", ""]
    out += ["## Size and ingestion", "",
            "| N | bytes/doc | " + " | ".join(KINDS) + " | bulk docs/s | refresh s | merge s |",
            "|---:|---:|" + "---:|" * len(KINDS) + "---:|---:|---:|"]
    for s in steps:
        out.append(f"| {s['docs']} | {s['bytes_per_doc']:.0f} | "
                   + " | ".join(f"{s['by_kind_per_doc'][k]:.0f}" for k in KINDS)
                   + f" | {s['load']['bulk_docs_per_s']:.0f} | {s['refresh_seconds']:.1f} | "
                   f"{s['merge_seconds']:.1f}{'' if s.get('merge_done', True) else ' (unfinished)'} |")
    out += ["", "bulk docs/s is for the documents added in that step (client wall time of the bulk "
            "calls; synthesis and coding excluded); merge is a force merge to one segment. Bytes "
            + ("leave mv_codes, dense and fde out of `_recovery_source` (`recovery_source_excludes`),"
               " so they are close to a merged index's steady state" if report.get("recovery_source")
               else "were measured with `_recovery_source` off, which on OpenSearch 3.6 with the "
               "k-NN derived source also stores mv_codes in `_source` (about 27 KB/doc)") + ".", "",
            "## Queries", ""]
    specs = [q["spec"] for q in steps[0]["queries"]]
    out += ["| spec | " + " | ".join(f"nDCG@10 N={n}" for n in ns) + " | "
            + " | ".join(f"p50/p95 ms N={n}" for n in ns) + " |",
            "|---|" + "---:|" * (2 * len(ns))]
    for name in specs:
        rows = [next(q for q in s["queries"] if q["spec"] == name) for s in steps]
        out.append(f"| {name} | " + " | ".join(f"{q['ndcg@10']:.4f}" for q in rows) + " | "
                   + " | ".join(f"{q['p50_ms']:.0f} / {q['p95_ms']:.0f}" for q in rows) + " |")
    if any(s.get("concurrent") for s in steps):
        out += ["", "With client processes through `osneural serve --workers` (p50 / p95 ms, "
                "queries/s):", "",
                "| spec | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for name in specs:
            cells = []
            for s in steps:
                c = next((q for q in s.get("concurrent") or [] if q["spec"] == name), None)
                cells.append("-" if c is None else
                             f"{c['p50_ms']:.0f} / {c['p95_ms']:.0f} ({c['qps']:.0f}/s, "
                             f"{c['clients']} clients)")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "## Growth exponents (y ~ N^b)", ""]
    g = report["growth"]
    out += ["| quantity | b |", "|---|---:|"]
    for k, v in g.items():
        out.append(f"| {k} | {'-' if v is None else f'{v:+.2f}'} |")
    a = report["assumptions"]
    out += ["", "## Projection to 10M and 100M documents", "",
            f"From the largest step's bytes per document; {a['replicas']} replica(s); shards of at "
            f"most {a['shard_gb']:.0f} GB; nodes with {a['node_ram_gb']:.0f} GB of page cache for "
            f"vectors and {a['node_disk_gb']:.0f} GB of usable disk.", "",
            "| docs | primary disk GB | with replicas GB | vector RAM GB | with replicas GB | "
            "primary shards | nodes |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for p in report["projection"]:
        out.append(f"| {p['docs']:,} | {p['primary_disk_gb']:.0f} | {p['disk_with_replicas_gb']:.0f} | "
                   f"{p['vector_ram_gb']:.0f} | {p['vector_ram_with_replicas_gb']:.0f} | "
                   f"{p['primary_shards']} | {p['nodes']} |")
    if report.get("stopped"):
        out += ["", f"Stopped: {report['stopped']}"]
    notes = path.read_text(encoding="utf-8").split("<!-- notes -->", 1) if path.exists() else []
    body = "\n".join(out).rstrip() + "\n"
    if len(notes) == 2:  # hand-written notes below the marker survive a rerun
        body += "\n<!-- notes -->" + notes[1]
    path.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    from osneural.connection import ClusterConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9400", help="the node to grow the index on")
    ap.add_argument("--source-url", default="http://127.0.0.1:9200")
    ap.add_argument("--source-index", default="osneural-quality-scifact")
    ap.add_argument("--sizes", default="10000,100000", help="comma list of N, ascending")
    ap.add_argument("--specs", default=",".join(DEFAULT_SPECS))
    ap.add_argument("--clients", type=int, default=8,
                    help="client processes for the concurrent rows, sent through `osneural serve "
                         "--workers` (0: none)")
    ap.add_argument("--serve-workers", type=int, default=2)
    ap.add_argument("--max-queries", type=int, help="first N judged test queries (default all)")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline", help="UTC HH:MM after which no new size is started")
    ap.add_argument("--merge-timeout", type=float, default=1200)
    ap.add_argument("--heap", default="2g", help="the node's heap, for the report")
    ap.add_argument("--shard-gb", type=float, default=40)
    ap.add_argument("--node-ram-gb", type=float, default=32)
    ap.add_argument("--node-disk-gb", type=float, default=1500)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--no-recovery-source", dest="recovery_source", action="store_false",
                    help="turn _recovery_source off (steady state; see create_index for the catch)")
    ap.add_argument("--resume", action="store_true",
                    help="grow the index an earlier run left (its steps: $TMPDIR/osneural-scale.json)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-docs", action="store_true", help="write docs/scale.md")
    args = ap.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    log = sys.stderr

    from osneural.ingest.codec_store import load_codecs

    client = ClusterConfig.from_values(args.url, timeout=600).client()
    source = ClusterConfig.from_values(args.source_url, timeout=600).client()
    bundle = load_codecs(source, args.source_index)
    if bundle is None:
        ap.error(f"{args.source_index!r} has no codec document at {args.source_url}")
    t0 = time.perf_counter()
    real = load_real(source, args.source_index)
    print(f"{args.source_index}: {len(real)} real documents read ({time.perf_counter() - t0:.0f}s)",
          file=log)
    if sizes[0] < len(real):
        ap.error(f"every size must hold the {len(real)} real documents")
    report: dict[str, Any] = {
        "command": "python bench/scale.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "opensearch": client.info()["version"]["number"], "url": args.url, "heap": args.heap,
        "source_index": args.source_index, "real_docs": len(real),
        "recovery_source": args.recovery_source,
        "realism": realism(real, args.seed), "steps": [], "stopped": None,
        "assumptions": {"shard_gb": args.shard_gb, "node_ram_gb": args.node_ram_gb,
                        "node_disk_gb": args.node_disk_gb, "replicas": args.replicas},
    }
    partial = Path(os.environ.get("TMPDIR", "/tmp")) / "osneural-scale.json"
    loaded = 0  # documents in the index: real first, then distractors 0, 1, ...
    if args.resume and client.indices.exists(index=INDEX) and partial.exists():
        # Grow the index an earlier run left; its measured steps come from its partial report.
        client.indices.refresh(index=INDEX)
        loaded = int(client.count(index=INDEX)["count"])
        earlier = json.loads(partial.read_text())
        report["steps"] = [s for s in earlier["steps"] if s["docs"] <= loaded]
        report["command"] = earlier["command"] + " && " + report["command"]
        sizes = [n for n in sizes if n > loaded]
    else:
        create_index(client, source, args.source_index, bundle, args.recovery_source)
    start_minute = time.gmtime().tm_hour * 60 + time.gmtime().tm_min

    def docs_until(n: int) -> Iterator[dict[str, Any]]:
        nonlocal loaded
        while loaded < n:
            if loaded < len(real):
                i = loaded
                yield {"id": real.ids[i], "title": real.titles[i], "text": real.texts[i],
                       "dense": real.dense[i], "sparse": real.sparse[i], "tokens": real.tokens[i]}
            else:
                yield distractor(real, loaded - len(real), args.seed)
            loaded += 1

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/peer.py's serve and clients
    from peer import ClientProcesses, start_serve

    workdir = Path(tempfile.mkdtemp(prefix="osneural-scale-"))
    serve = pool = serve_base = None
    try:
        for n in sizes:
            if args.deadline and report["steps"]:
                hh, mm = (int(x) for x in args.deadline.split(":"))
                now = time.gmtime().tm_hour * 60 + time.gmtime().tm_min
                # minutes since the start, against the deadline's (which may fall after midnight)
                if (now - start_minute) % 1440 >= (hh * 60 + mm - start_minute) % 1440:
                    report["stopped"] = (f"N={n} not started: the {args.deadline} UTC deadline passed "
                                         f"after N={report['steps'][-1]['docs']}")
                    break
            print(f"N={n}: loading {n - loaded} documents", file=log, flush=True)
            load = load_step(client, docs_until(n), bundle, args.batch, log)
            t = time.perf_counter()
            client.indices.refresh(index=INDEX, request_timeout=1200)
            refresh_s = time.perf_counter() - t
            client.indices.flush(index=INDEX)
            fresh = measure_index(client, INDEX)  # as loaded: the segments the merge policy left
            # Queries run on the index as loaded (the segments the merge policy left, as a live
            # index serves), before the force merge: at 1M the merge alone takes about an hour.
            queries = query_step(client, specs, args.max_queries, log)
            concurrent: list[dict] = []
            if args.clients:
                if pool is None:
                    serve, serve_base = start_serve(args.url, args.serve_workers, workdir,
                                                    allow=(INDEX,))
                    pool = ClientProcesses(args.clients)
                concurrent = concurrent_step(pool, serve_base, specs, args.clients,
                                             args.max_queries, log)
            if args.json or args.write_docs:  # what the step measured before its merge
                report["pending"] = {"docs": fresh["docs"], "load": load, "queries": queries,
                                     "concurrent": concurrent, "node": node_memory(client),
                                     "fresh_bytes_per_doc": fresh["bytes"] / max(1, fresh["docs"]),
                                     "fresh_by_kind_per_doc": {
                                         k: v / max(1, fresh["docs"])
                                         for k, v in fresh["by_kind"].items()}}
                partial.write_text(json.dumps(report, indent=2))
            t = time.perf_counter()
            merge_done = True
            try:
                client.indices.forcemerge(index=INDEX, max_num_segments=1,
                                          request_timeout=args.merge_timeout)
            except Exception as exc:  # a timeout leaves the merge running on the node
                merge_done = False
                print(f"  force merge did not answer within {args.merge_timeout:.0f}s: {exc}", file=log)
            merge_s = time.perf_counter() - t
            # Without a refresh the pre-merge segments stay open beside the merged one and the store
            # counts both (seen at N=10k: 131 KB/doc, twice the merged segment).
            client.indices.refresh(index=INDEX, request_timeout=1200)
            client.indices.flush(index=INDEX)
            size = measure_index(client, INDEX)
            step = {"docs": size["docs"], "load": load, "refresh_seconds": refresh_s,
                    "merge_seconds": merge_s, "merge_done": merge_done, "segments": size["segments"],
                    "bytes": size["bytes"], "bytes_per_doc": size["bytes"] / size["docs"],
                    "by_kind_per_doc": {k: v / size["docs"] for k, v in size["by_kind"].items()},
                    "fresh": {"segments": fresh["segments"],
                              "bytes_per_doc": fresh["bytes"] / max(1, fresh["docs"]),
                              "by_kind_per_doc": {k: v / max(1, fresh["docs"])
                                                  for k, v in fresh["by_kind"].items()}},
                    "node": node_memory(client)}
            print(f"N={size['docs']}: fresh {step['fresh']['bytes_per_doc']:.0f} B/doc in "
                  f"{fresh['segments']} segments; heap {step['node']['heap_used_mb']} MB used, "
                  f"RSS {step['node']['rss_mb']} MB", file=log, flush=True)
            print(f"N={size['docs']}: {step['bytes_per_doc']:.0f} B/doc, bulk "
                  f"{load['bulk_docs_per_s']:.0f} docs/s, refresh {refresh_s:.1f}s, merge {merge_s:.1f}s",
                  file=log, flush=True)
            step["queries"] = queries
            step["concurrent"] = concurrent
            report["steps"].append(step)
            report.pop("pending", None)
            if args.json or args.write_docs:  # keep partial results if a later size is cut short
                partial.write_text(json.dumps(report, indent=2))
    finally:
        if pool is not None:
            pool.close()
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=60)

    steps = report["steps"]
    ns = [s["docs"] for s in steps]
    growth: dict[str, float | None] = {
        "bytes/doc": slope(ns, [s["bytes_per_doc"] for s in steps]),
        "bulk docs/s": slope(ns, [s["load"]["bulk_docs_per_s"] for s in steps]),
        "force merge s": slope(ns, [s["merge_seconds"] for s in steps]),
    }
    for name in specs:
        for key in ("p50_ms", "p95_ms"):
            growth[f"{name} {key[:3]}"] = slope(
                ns, [next(q[key] for q in s["queries"] if q["spec"] == name) for s in steps])
    report["growth"] = growth
    report["projection"] = project(steps[-1], (10_000_000, 100_000_000), args.shard_gb,
                                   args.node_ram_gb, args.node_disk_gb, args.replicas)
    if args.write_docs:
        write_markdown(report, REPO / "docs" / "scale.md")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for s in steps:
            print(f"N={s['docs']}: {s['bytes_per_doc']:.0f} B/doc, "
                  f"{s['load']['bulk_docs_per_s']:.0f} docs/s")
        print(json.dumps(growth, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the bench/ scripts share, so each script holds only its own measurement.

* where the data sets are: `OSNEURAL_BEIR_DIR`, else `shared/data/beir` beside the checkout
  (where CI puts them), and the classic collections likewise;
* corpus records and the passage osneural encodes of each;
* nDCG@10 of rankings through `osneural.eval.metrics` (one set of conventions for every table);
* timing (best-of, median-of, threaded passes with latencies) and p50 / p95;
* output: `--json`, fixed-width tables, generated blocks inside hand-written docs;
* readers of what an index stores (dense vectors, float16 tokens, whole documents) and its size
  per Lucene file kind, for measurements that must not encode the corpus again.

Heavy libraries (numpy, opensearch-py, the plugin) are imported inside the functions that need
them: a script's `--help` stays fast and works before the kernels are built.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")
R = TypeVar("R")

REPO = Path(__file__).resolve().parents[1]  # the checkout (eval/ sits at its top level)


def beir_root() -> Path:
    """The BEIR collections' folder: `OSNEURAL_BEIR_DIR`, else `shared/data/beir` beside the checkout."""
    env = os.environ.get("OSNEURAL_BEIR_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "beir"


def beir_dir(name: str) -> Path:
    """One BEIR collection's folder (`scifact`, `nfcorpus`), whether or not it exists."""
    return beir_root() / name


def classic_root() -> Path:
    """The small classic collections (MEDLINE, ADI, LISA) in BEIR layout: `OSNEURAL_CLASSIC_DIR`,
    else `shared/data/classic` beside the checkout."""
    env = os.environ.get("OSNEURAL_CLASSIC_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "classic"


def dataset_dir(name_or_path: str | Path) -> Path:
    """A collection named in either shared folder (`scifact`, `lisa`) or any BEIR-layout folder
    given by path, so benchmarks run on a user's own judged collection as well."""
    from osneural.eval.beir import resolve_collection

    return resolve_collection(name_or_path, [beir_root(), classic_root()])


def sparse_dot_scores(queries: Sequence[Mapping[str, float]],
                      docs: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Exact sparse dot products, [query, document], through postings built once (what the
    `rank_features` stage computes, without OpenSearch's ~9-bit feature rounding)."""
    import numpy as np

    postings: dict[str, tuple[list[int], list[float]]] = {}
    for i, w in enumerate(docs):
        for t, x in w.items():
            entry = postings.setdefault(t, ([], []))
            entry[0].append(i)
            entry[1].append(x)
    arrays = {t: (np.asarray(a), np.asarray(b, np.float64)) for t, (a, b) in postings.items()}
    out = np.zeros((len(queries), len(docs)))
    for n, w in enumerate(queries):
        for t, x in w.items():
            if t in arrays:
                idx, val = arrays[t]
                out[n, idx] += x * val
    return out


# ---------------------------------------------------------------------------- corpus records


def corpus_records(data: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` raw records (`_id`, `title`, `text`, ...) of a BEIR-layout folder's
    `corpus.jsonl` (or of a JSONL file), as `index_corpus` accepts them: benchmarks hand the same
    records to osneural and to a native pipeline, so they keep the records rather than parsed
    `CorpusDocument`s."""
    path = Path(data)
    if path.is_dir():
        path = path / "corpus.jsonl"
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in islice((ln for ln in fh if ln.strip()), limit)]


def passage(record: Mapping[str, Any]) -> str:
    """The text osneural encodes for a raw corpus record: `osneural.ingest.batch.joined_text`
    (title and body in one passage), so a native pipeline is fed exactly the same string."""
    from osneural.ingest.batch import joined_text
    from osneural.ingest.corpus import CorpusDocument

    return joined_text(CorpusDocument(id=str(record.get("_id", "")),
                                      title=record.get("title") or "",
                                      text=record.get("text") or ""))


# ------------------------------------------------------------------------------ relevance


def ndcg10(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 of rankings (`{query: [doc ids, best first]}`) over the judged queries run,
    with `osneural.eval.metrics` (BEIR's conventions, the scores `bench/quality.py` reports)."""
    from osneural.eval.metrics import compute_metrics, ranked_run

    runs = {q: ranked_run(list(ids))[0] for q, ids in run.items() if q in qrels}
    return compute_metrics(qrels, runs, ("ndcg@10",))[0]["ndcg@10"]


# ---------------------------------------------------------------------------------- timing


def pct(values_ms: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) of latencies, numpy's linear interpolation, as every table here reports them."""
    import numpy as np

    x = np.asarray(values_ms, dtype=np.float64)
    return float(np.percentile(x, 50)), float(np.percentile(x, 95))


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Seconds of the fastest of `repeat` calls after one warm-up call (the least disturbed by
    other work on a shared machine)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_time(fn: Callable[[], object], min_time: float = 0.3, min_reps: int = 3,
                max_reps: int = 200) -> float:
    """Median seconds per call after a warm-up; repeats until `min_time` has elapsed (and at least
    `min_reps` times) so that short kernels give stable numbers."""
    import numpy as np

    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= max_reps:
            break
    return float(np.median(times))


def timed_map(fn: Callable[[T], R], items: Sequence[T],
              workers: int) -> tuple[dict[T, R], list[float], float]:
    """`fn` over every item with `workers` client threads: results by item, per-call latencies in
    milliseconds, and the wall seconds of the whole pass (throughput = len(items) / seconds)."""
    lat: list[float] = []
    out: dict[T, R] = {}

    def one(item: T) -> tuple[T, R, float]:
        t0 = time.perf_counter()
        res = fn(item)
        return item, res, (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:
        for item, res, ms in pool.map(one, list(items)):
            out[item] = res
            lat.append(ms)
    return out, lat, time.perf_counter() - t0


def logger(name: str) -> Callable[[str], None]:
    """A progress printer to stderr, `[name HH:MM:SS] message`, so stdout stays the table or the
    JSON a caller may pipe."""
    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------------------------- output


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """`--json`: every benchmark prints its result as JSON on stdout instead of the table."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def print_json(result: Any) -> None:
    json.dump(result, sys.stdout, indent=2, default=str)
    print()


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A fixed-width text table: `columns` are (key, header, format spec such as `.2f`); a missing
    or None value prints blank. The first column is left-aligned, the others right-aligned."""
    def cell(row: Mapping[str, Any], key: str, spec: str) -> str:
        v = row.get(key)
        return "" if v is None else format(v, spec)

    cells = [[header for _, header, _ in columns]]
    cells += [[cell(r, key, spec) for key, _, spec in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in cells)


def replace_block(path: Path, name: str, text: str) -> None:
    """Write `text` between `<!-- name:begin -->` and `<!-- name:end -->`, appending the block
    when absent, so generated sections never overwrite the hand-written ones."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new, encoding="utf-8")


# -------------------------------------------------------------------- stored representations


def stored_dense(client: Any, index: str, field: str = "dense") -> tuple[list[str], np.ndarray]:
    """Every document's stored dense vector (`_source` or the vector index, wherever the index
    keeps it: `osneural.mappings.stored_vectors`), for exact offline scoring."""
    import numpy as np
    from opensearchpy import helpers
    from osneural.mappings.stored_vectors import index_vector_fields, read_vector, request_parts

    vectors = index_vector_fields(client, index)
    source, scripts = request_parts(vectors, [field])
    ids, rows = [], []
    for hit in helpers.scan(client, index=index, size=500,
                            query={"query": {"match_all": {}}, "_source": source or False,
                                   "script_fields": scripts}):
        vec = read_vector(hit, vectors[field])
        if vec is not None:
            ids.append(hit["_id"])
            rows.append(vec)
    return ids, np.asarray(rows, dtype=np.float32)


def stored_float_tokens(client: Any, index: str, doc_ids: Iterable[str],
                        batch: int = 16) -> Iterator[tuple[str, np.ndarray]]:
    """(id, float32 tokens) from the float16 token copies (`float_tokens` representation) of these
    documents, fetched `batch` documents per request (each is ~0.1 MB of doc values)."""
    import numpy as np
    from osneural.plugin import rescoring

    props = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    dim = int(props["dense"]["dimension"])
    ids = sorted(doc_ids)
    for start in range(0, len(ids), batch):
        raw = rescoring.fetch_codes(client, index, ids[start : start + batch], "mv_f16")
        for doc_id, blob in raw.items():
            yield doc_id, np.frombuffer(blob, "<f2").reshape(-1, dim).astype(np.float32)


def stored_documents(client: Any, index: str, dim: int, batch: int = 50,
                     float_tokens: bool = True) -> Iterator[dict[str, Any]]:
    """Every document's title, text, app fields, dense, sparse and float32 tokens (if stored):
    what a copy or a scaled-up variant of an index is derived from without encoding again."""
    import numpy as np
    from opensearchpy import helpers
    from osneural.mappings import reserved_field
    from osneural.mappings.stored_vectors import index_vector_fields, read_vector, request_parts
    from osneural.plugin.rescoring import decode_doc_value

    vectors = index_vector_fields(client, index)
    _, scripts = request_parts(vectors, ["dense"] if "dense" in vectors else [])
    query: dict[str, Any] = {"_source": {"excludes": ["bin_tokens", "bin_code", "dense_pq", "fde"]},
                             "script_fields": scripts}
    if float_tokens:
        query["docvalue_fields"] = ["mv_f16"]
    for hit in helpers.scan(client, index=index, query=query, size=batch, preserve_order=True,
                            request_timeout=600):
        src = hit.get("_source") or {}
        doc = {"id": hit["_id"], "title": src.get("title") or "", "text": src.get("text") or "",
               "fields": {k: v for k, v in src.items() if not reserved_field(k)},
               "dense": read_vector(hit, vectors["dense"]) if "dense" in vectors else None,
               "sparse": src.get("sparse"), "tokens": None}
        values = (hit.get("fields") or {}).get("mv_f16")
        if values:
            blob = decode_doc_value(values[0])
            doc["tokens"] = np.frombuffer(blob, "<f2").reshape(-1, dim).astype(np.float32)
        yield doc


# -------------------------------------------------------------------------- index size


#: Lucene file extension -> the kind of data it holds (Lucene 9/10 codecs, k-NN's lucene engine)
FILE_KINDS = {
    "vec": "vectors", "vex": "vectors", "vem": "vectors", "veq": "vectors", "vemq": "vectors",
    "vemf": "vectors", "faiss": "vectors",
    "tim": "postings", "tip": "postings", "tmd": "postings", "doc": "postings",
    "pos": "postings", "pay": "postings", "psm": "postings",
    "dvd": "doc_values", "dvm": "doc_values",
    "fdt": "stored", "fdx": "stored", "fdm": "stored",
    "nvd": "norms", "nvm": "norms",
    "kdd": "points", "kdi": "points", "kdm": "points",
}
KINDS = ("vectors", "postings", "doc_values", "stored", "norms", "points", "other")


def measure_index(client: Any, index: str) -> dict[str, Any]:
    """Store bytes, docs and bytes per Lucene file kind of an index's primaries."""
    stats = client.indices.stats(index=index, metric="store,docs,segments",
                                 params={"include_segment_file_sizes": "true"})
    prim = stats["indices"][index]["primaries"]
    by_kind = dict.fromkeys(KINDS, 0)
    for ext, info in (prim["segments"].get("file_sizes") or {}).items():
        by_kind[FILE_KINDS.get(ext, "other")] += int(info["size_in_bytes"])
    return {"bytes": int(prim["store"]["size_in_bytes"]), "docs": int(prim["docs"]["count"]),
            "segments": int(prim["segments"]["count"]), "by_kind": by_kind}

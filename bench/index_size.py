"""Where an index's bytes go, field by field: one single-field copy per field, measured on disk.

    python bench/index_size.py --index osneural-quality-scifact [--fields dense,fde] [--json]
    python bench/index_size.py --index osneural-quality-scifact --whole-steady [--json]

OpenSearch has no per-field disk-usage API (Elasticsearch's `_disk_usage` arrived after the
fork; OpenSearch 3.6 answers "no handler found"), and Lucene keeps all fields of a kind in shared
files (every vector field in one `.vec`, all doc values in one `.dvd`), so per-file sizes alone
cannot split `dense` from `fde`. So each field is copied on its own: a throw-away index with the
source index's settings and only that field's mapping (and `_source` exclusion), the same
documents and `_id`s, force-merged to one segment, then measured with `_stats` (store size and
`include_segment_file_sizes`). A baseline copy with the same ids and an empty `_source` gives
the fixed cost (`_id`, `_seq_no`, `_version`, segment metadata); each field's figure is its copy
minus the baseline, split by Lucene file kind (vectors, postings, doc values, stored fields
-- i.e. `_source` --, norms, points). The single-field copies also show how a field compresses
alone; `_source` compresses a little better when fields share blocks, so the sum of the parts
is an upper bound, and the table prints the source index's own size beside it.

Fields kept out of `_source` still cost stored bytes for a while: OpenSearch writes the full
original document as `_recovery_source` (for operation-based replica recovery) and prunes it in
merges only after the soft-deletes retention window. On a freshly built SciFact index that doubles
`mv_codes` (20 KB of doc values plus 27 KB of recovery source per document). The copies measure
the steady state by default (`_source.recovery_source_enabled: false`, i.e. what a merged index
holds once the window has passed); `--with-recovery-source` measures the fresh state instead.

`--whole-steady` measures the index itself in that steady state instead, with every field in
one `_source` as OpenSearch keeps it: it shortens the index's soft-deletes retention lease to 1 s,
writes and deletes one throw-away document so that a merge has two segments to merge (the
merge is what prunes `_recovery_source`), waits for the lease to lapse, force-merges to one segment,
measures, and repeats until a round leaves the size unchanged; then it sets the lease period back. It changes the index's sequence numbers (one document
written and deleted) and nothing else. Its figure is what the per-field sum cannot show: how the
fields interact in one `_source` (on OpenSearch 3.6 with `_source.excludes` set, the k-NN derived
source writes `dense` and `fde` back into `_source` as JSON during merges).

Values are read back from the source index: `knn_vector` fields from `_source` or, where the
index keeps them out of it, from the vector index (`osneural.mappings.stored_vectors`), other
fields excluded from `_source` from their binary doc values. `mv_f16` (the
float16 token copies, not a default representation, ~130 KB/doc) is skipped unless named.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from osneural.eval.benchkit import KINDS, measure_index

from osneural.connection import ClusterConfig, add_cluster_arguments

#: fields of the default representations that are not text (the issue's size budget)
TEXT_FIELDS = ("title", "text", "metadata")  # `metadata`: the app fields of older indices
SKIP_BY_DEFAULT = ("mv_f16",)


def source_layout(client: Any, index: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """(field mappings, `_source` excludes, copyable index settings) of the source index."""
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]
    settings = client.indices.get_settings(index=index, flat_settings=True)[index]["settings"]
    keep = {k: v for k, v in settings.items()
            if k.startswith(("index.knn", "index.analysis")) or k == "index.codec"}
    excludes = list((mapping.get("_source") or {}).get("excludes") or [])
    return mapping.get("properties") or {}, excludes, keep


def iter_field(client: Any, index: str, name: str, from_doc_values: bool,
               batch: int, ids: list[str]) -> Iterator[tuple[str, Any]]:
    """(id, value) of one field for each of `ids` that has it."""
    from opensearchpy import helpers
    from osneural.mappings.stored_vectors import index_vector_fields, read_vector, request_parts
    from osneural.plugin.rescoring import decode_doc_value

    vectors = index_vector_fields(client, index)
    vector = vectors.get(name)
    if vector is not None:  # `_source` or the vector index, wherever the index keeps it
        source, scripts = request_parts(vectors, [name])
        query: dict[str, Any] = {"_source": source or False, "script_fields": scripts}
    elif from_doc_values:
        query = {"_source": False, "docvalue_fields": [name]}
    else:
        query = {"_source": [name]}
    query["query"] = {"ids": {"values": ids}}
    for hit in helpers.scan(client, index=index, query=query, size=batch, preserve_order=False):
        if vector is not None:
            value = read_vector(hit, vector)
            if value is not None:
                yield hit["_id"], value
        elif from_doc_values:
            values = (hit.get("fields") or {}).get(name)
            if values:
                import base64

                yield hit["_id"], base64.b64encode(decode_doc_value(values[0])).decode("ascii")
        else:
            value = (hit.get("_source") or {}).get(name)
            if value is not None:
                yield hit["_id"], value


def copy_field(client: Any, source: str, target: str, name: str | None,
               props: dict[str, Any], excludes: list[str], settings: dict[str, Any],
               batch: int, ids: list[str], recovery_source: bool = False) -> dict[str, Any]:
    """Copy one field (None: ids only) of `source` into a fresh `target`, merged to 1 segment."""
    from opensearchpy import helpers

    if client.indices.exists(index=target):
        client.indices.delete(index=target)
    body_settings = {**settings, "index.number_of_shards": 1, "index.number_of_replicas": 0,
                     "index.refresh_interval": "-1"}
    mappings: dict[str, Any] = {"dynamic": "strict", "properties": {}}
    if name is not None:
        mappings["properties"][name] = props[name]
        if name in excludes:
            mappings["_source"] = {"excludes": [name]}
    if not recovery_source:
        mappings.setdefault("_source", {})["recovery_source_enabled"] = False
    client.indices.create(index=target, body={"settings": body_settings, "mappings": mappings})
    t0 = time.perf_counter()
    if name is None:
        docs = ((doc_id, None) for doc_id in ids)
    else:
        docs = iter_field(client, source, name, name in excludes, batch, ids)
    actions = ({"_index": target, "_id": doc_id,
                "_source": {} if value is None else {name: value}} for doc_id, value in docs)
    ok, _ = helpers.bulk(client, actions, chunk_size=batch, max_chunk_bytes=16 << 20,
                         request_timeout=600, max_retries=5, initial_backoff=2)
    client.indices.refresh(index=target)
    client.indices.forcemerge(index=target, max_num_segments=1, request_timeout=1800)
    client.indices.flush(index=target)
    out = measure_index(client, target)
    out["copy_seconds"] = time.perf_counter() - t0
    return out


def whole_steady(client: Any, index: str, wait_s: float = 35.0, rounds: int = 6) -> dict[str, Any]:
    """The whole index, merged, once `_recovery_source` is pruned (see the module docstring).

    When the lease lets go of the operations depends on background syncs, so this repeats
    (probe document, wait, merge, measure) until a round leaves the size where the previous one
    did."""
    key = "index.soft_deletes.retention_lease.period"
    flat = client.indices.get_settings(index=index, flat_settings=True)[index]
    before = flat.get("settings", {}).get(key)
    client.indices.put_settings(index=index, body={key: "1s"})
    sizes: list[int] = []
    try:
        for _ in range(rounds):
            client.index(index=index, id="osneural-index-size-probe", body={}, refresh=True)
            client.delete(index=index, id="osneural-index-size-probe", refresh=True)
            time.sleep(wait_s)  # past the lease, and past a lease sync that moves it up
            client.indices.forcemerge(index=index, max_num_segments=1, request_timeout=3600)
            client.indices.refresh(index=index)
            client.indices.flush(index=index)
            out = measure_index(client, index)
            sizes.append(out["bytes"])
            if len(sizes) >= 2 and abs(sizes[-1] - sizes[-2]) <= 0.005 * sizes[-2]:
                break
    finally:
        client.indices.put_settings(index=index, body={key: before})
    docs = max(1, out["docs"])
    return {"index": index, "docs": out["docs"], "segments": out["segments"],
            "bytes_per_doc": round(out["bytes"] / docs, 1),
            "by_kind_per_doc": {k: round(v / docs, 1) for k, v in out["by_kind"].items()},
            "bytes_per_doc_by_round": [round(x / docs, 1) for x in sizes]}


def by_field(client: Any, index: str, fields: list[str] | None, batch: int,
             keep: bool = False, recovery_source: bool = False,
             log: Any = sys.stderr) -> dict[str, Any]:
    """Per-field bytes of `index` (see the module docstring for the method)."""
    props, excludes, settings = source_layout(client, index)
    names = fields or [f for f in props if f not in SKIP_BY_DEFAULT]
    unknown = [f for f in names if f not in props]
    if unknown:
        raise SystemExit(f"index {index!r} has no field(s) {unknown}; it has {sorted(props)}")
    # A field kept out of `_source` can be read back only from doc values (binary fields here)
    # or, for vectors, from the vector index; rank_features and doc-value-less keywords cannot,
    # so such a field cannot be copied.
    unreadable = [f for f in names if f in excludes and props[f].get("type") != "knn_vector"
                  and not (props[f].get("type") == "binary" and props[f].get("doc_values", False))]
    if unreadable:
        raise SystemExit(f"fields {unreadable} are kept out of _source and have no doc values: "
                         "their values cannot be read back to copy them; measure them on an "
                         "index that keeps them in _source")
    from opensearchpy import helpers

    client.indices.refresh(index=index)
    total = measure_index(client, index)
    # The documents are pinned at the start, so every copy holds the same ones even while the
    # source index is still being written.
    ids = sorted(hit["_id"] for hit in helpers.scan(client, index=index, query={"_source": False},
                                                    size=1000))
    total["docs"] = len(ids)
    prefix = f"osneural-size-{int(time.time())}"
    print(f"{index}: {total['docs']} docs, {total['bytes']} bytes in {total['segments']} "
          f"segments; baseline copy", file=log)
    base = copy_field(client, index, f"{prefix}-base", None, props, excludes, settings, batch,
                      ids, recovery_source)
    rows = []
    try:
        for name in names:
            print(f"{index}: copying field {name}", file=log)
            target = f"{prefix}-{name.replace('_', '-')}"
            got = copy_field(client, index, target, name, props, excludes, settings, batch, ids,
                             recovery_source)
            if not keep:
                client.indices.delete(index=target)
            kinds = {k: got["by_kind"][k] - base["by_kind"][k] for k in KINDS}
            size = got["bytes"] - base["bytes"]
            rows.append({"field": name, "type": props[name].get("type"),
                         "in_source": name not in excludes, "docs_with_field": got["docs"],
                         "bytes": size, "bytes_per_doc": size / max(total["docs"], 1),
                         "by_kind": kinds, "copy_seconds": got["copy_seconds"]})
    finally:
        if not keep:
            client.indices.delete(index=f"{prefix}-base", ignore_unavailable=True)
    no_text = sum(r["bytes"] for r in rows if r["field"] not in TEXT_FIELDS)
    return {
        "index": index, "docs": total["docs"], "index_bytes": total["bytes"],
        "index_bytes_per_doc": total["bytes"] / max(total["docs"], 1),
        "index_segments": total["segments"], "index_by_kind": total["by_kind"],
        "baseline_bytes": base["bytes"], "baseline_bytes_per_doc": base["bytes"] / max(total["docs"], 1),
        "fields": rows,
        "sum_fields_bytes": sum(r["bytes"] for r in rows),
        "sum_without_text_bytes": no_text,
        "sum_without_text_per_doc": no_text / max(total["docs"], 1),
        "skipped": [f for f in props if f not in names],
        "recovery_source": recovery_source,
    }


def format_table(report: dict[str, Any], markdown: bool = True) -> str:
    """The per-field table (bytes per document; file kinds as columns)."""
    n = max(report["docs"], 1)
    head = ["field", "type", "in _source", "B/doc", *KINDS]
    lines = []
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    else:
        lines.append(" ".join(f"{h:>11}" for h in head))

    def row(cells: list[str]) -> None:
        lines.append("| " + " | ".join(cells) + " |" if markdown
                     else " ".join(f"{c:>11}" for c in cells))

    for r in sorted(report["fields"], key=lambda r: -r["bytes"]):
        row([r["field"], str(r["type"]), "yes" if r["in_source"] else "no",
             f"{r['bytes_per_doc']:.0f}", *(f"{r['by_kind'][k] / n:.0f}" for k in KINDS)])
    row(["(ids, seq_no, version)", "", "", f"{report['baseline_bytes_per_doc']:.0f}",
         *("" for _ in KINDS)])
    row(["sum without text", "", "", f"{report['sum_without_text_per_doc']:.0f}",
         *("" for _ in KINDS)])
    row([f"whole index ({report['index_segments']} segments)", "", "",
         f"{report['index_bytes_per_doc']:.0f}",
         *(f"{report['index_by_kind'][k] / n:.0f}" for k in KINDS)])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(ap)
    ap.add_argument("--index", required=True)
    ap.add_argument("--fields", help="comma list (default: every mapped field but mv_f16)")
    ap.add_argument("--batch", type=int, default=100, help="documents per scan page and bulk")
    ap.add_argument("--keep", action="store_true", help="keep the single-field copies")
    ap.add_argument("--with-recovery-source", action="store_true",
                    help="keep _recovery_source in the copies (a freshly written index)")
    ap.add_argument("--whole-steady", action="store_true",
                    help="measure the whole index once its recovery source is pruned, not field by field")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    client = ClusterConfig.from_args(args, timeout=600).client()
    if args.whole_steady:
        whole = whole_steady(client, args.index)
        print(json.dumps(whole, indent=2) if args.json else
              f"{whole['index']}: {whole['bytes_per_doc']:.0f} B/doc merged, recovery source "
              f"pruned ({whole['docs']} documents): " + ", ".join(
                  f"{k} {v:.0f}" for k, v in whole["by_kind_per_doc"].items() if v))
        return 0
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    report = by_field(client, args.index, fields, args.batch, keep=args.keep,
                      recovery_source=args.with_recovery_source)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report, markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

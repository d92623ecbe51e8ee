"""Write a smaller copy of a quality index from its stored representations, without encoding.

    python bench/recode_index.py --dataset scifact [--prefix osneural-small-] \
        [--fde-dtype int8] [--fde-final-dim N] [--extra-pool 1.5] [--token-pq-m 96] \
        [--sparse-top 64] [--exclude-source sparse,bin_tokens] [--no-float-tokens]

Encoding SciFact or NFCorpus again costs 15-30 minutes on this machine; every size lever of
issue 15 is a function of what `osneural-quality-<dataset>` already stores: the dense vector
(derived source), the SPLADE weights (`_source`) and the pooled token vectors as float16
(`mv_f16` doc values, the `float_tokens` representation). So the copy reads those and derives
everything else again with the ingestion's own code (`build_documents`, the codecs): binary
codes and dense PQ with the source index's trained codecs (identical codes), token PQ and the
MUVERA FDE with new codecs trained here the way `train_codecs` does (first 2,000 documents, at
most 50,000 tokens, seed 0). The copy gets its own codec document and `_meta`, so
`bench/quality.py --index-prefix <prefix>` evaluates it like any index (it finds the document
count complete and does not rebuild).

`--extra-pool F` pools the stored tokens (already pooled by 2 at ingestion) by F again, i.e. an
overall factor of about 2F; pooling raw tokens at 2F in one step clusters with more information,
so this is if anything a pessimistic stand-in for changing `CodecParams.pool_factor`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from osneural.connection import ClusterConfig, add_cluster_arguments


def stored_documents(client: Any, index: str, dim: int, batch: int = 50,
                     float_tokens: bool = True) -> Iterator[dict[str, Any]]:
    """Every document's title, text, app fields, dense, sparse and float32 tokens (if stored)."""
    from opensearchpy import helpers
    from osneural.mappings import reserved_field
    from osneural.plugin.rescoring import decode_doc_value

    query: dict[str, Any] = {"_source": {"excludes": ["bin_tokens", "bin_code", "dense_pq", "fde"]}}
    if float_tokens:
        query["docvalue_fields"] = ["mv_f16"]
    for hit in helpers.scan(client, index=index, query=query, size=batch, preserve_order=True,
                            request_timeout=600):
        src = hit.get("_source") or {}
        doc = {"id": hit["_id"], "title": src.get("title") or "", "text": src.get("text") or "",
               "fields": {k: v for k, v in src.items() if not reserved_field(k)},
               "dense": src.get("dense"),
               "sparse": src.get("sparse"), "tokens": None}
        values = (hit.get("fields") or {}).get("mv_f16")
        if values:
            blob = decode_doc_value(values[0])
            doc["tokens"] = np.frombuffer(blob, "<f2").reshape(-1, dim).astype(np.float32)
        yield doc


def top_sparse(weights: dict[str, float], k: int | None) -> dict[str, float]:
    """The `k` largest weights (ties by term, so the cut is deterministic); all when k is None."""
    if k is None or len(weights) <= k:
        return dict(weights)
    return dict(sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:k])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(ap)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--source", help="default: osneural-quality-<dataset>")
    ap.add_argument("--prefix", default="osneural-small-")
    ap.add_argument("--fde-dtype", choices=("float32", "int8"), default="float32")
    ap.add_argument("--fde-final-dim", type=int, help="count-sketch the FDE to this many dims")
    ap.add_argument("--extra-pool", type=float, default=1.0,
                    help="pool the stored (already pooled) tokens again by this factor")
    ap.add_argument("--token-pq-m", type=int, default=192)
    ap.add_argument("--sparse-top", type=int, help="keep this many sparse terms per document")
    ap.add_argument("--exclude-source", default="",
                    help="comma list of fields to keep out of _source (e.g. sparse,bin_tokens)")
    ap.add_argument("--no-float-tokens", action="store_true",
                    help="do not copy mv_f16 (the PQ-vs-float twin rows then cannot run)")
    ap.add_argument("--train-docs", type=int, default=2000)
    ap.add_argument("--max-train-tokens", type=int, default=50_000)
    ap.add_argument("--bulk-docs", type=int, default=50)
    ap.add_argument("--limit", type=int, help="copy only the first N documents (smoke runs)")
    args = ap.parse_args(argv)

    from opensearchpy import helpers
    from osneural.ingest.codec_store import delete_codecs, load_codecs, new_generation, save_codecs
    from osneural.codecs import MuveraFDE, ProductQuantizer, code_tokens, pool_tokens
    from osneural.ingest.corpus import CorpusDocument
    from osneural.ingest.documents import EncodedBatch, build_documents, matryoshka
    from osneural.ingest.indexer import codec_meta

    client = ClusterConfig.from_args(args, timeout=600).client()
    source = args.source or f"osneural-quality-{args.dataset}"
    target = f"{args.prefix}{args.dataset}"
    if target == source:
        ap.error("the target index would overwrite the source")
    mapping = client.indices.get_mapping(index=source)[source]["mappings"]
    props = mapping["properties"]
    dim = int(props["dense"]["dimension"])
    src_bundle = load_codecs(client, source)
    if src_bundle is None:
        ap.error(f"{source!r} has no codec document")
    if "mv_f16" not in props:
        ap.error(f"{source!r} has no float16 tokens (build it with the float_tokens representation)")
    t0 = time.perf_counter()
    log = sys.stderr

    # 1. Training sample: the first train_docs documents' tokens, pooled as the copy will be.
    def tokens_of(doc: dict[str, Any]) -> np.ndarray:
        t = doc["tokens"]
        return pool_tokens(t, args.extra_pool) if args.extra_pool > 1 else t

    head: list[dict[str, Any]] = []
    stream = stored_documents(client, source, dim)
    if args.limit:
        import itertools

        stream = itertools.islice(stream, args.limit)
    for doc in stream:
        doc["tokens"] = tokens_of(doc)
        head.append(doc)
        if len(head) >= args.train_docs:
            break
    flat = np.concatenate([d["tokens"] for d in head])
    rng = np.random.default_rng(0)
    if len(flat) > args.max_train_tokens:
        flat = flat[np.sort(rng.choice(len(flat), args.max_train_tokens, replace=False))]
    bundle = copy.deepcopy(src_bundle)
    bundle.pq_tokens = ProductQuantizer(args.token_pq_m, seed=0).fit(flat)
    fde = MuveraFDE(dim=dim, final_dim=args.fde_final_dim, seed=0)
    if args.fde_dtype == "int8":
        fde.calibrate_int8([d["tokens"] for d in head])
    bundle.fde = fde
    bundle.params["pool_factor"] = float(src_bundle.params.get("pool_factor", 2)) * args.extra_pool
    bundle.params["recoded_from"] = source
    print(f"{target}: codecs trained on {len(head)} docs, {len(flat)} tokens "
          f"({time.perf_counter() - t0:.0f}s)", file=log)

    # 2. The index: the source mapping with the levers applied.
    new_map = copy.deepcopy(mapping)
    new_map["properties"]["fde"]["dimension"] = fde.fde_dim
    if fde.dtype == "int8":
        new_map["properties"]["fde"]["data_type"] = "byte"
    excludes = set((new_map.get("_source") or {}).get("excludes") or [])
    excludes |= {f.strip() for f in args.exclude_source.split(",") if f.strip()}
    if args.no_float_tokens:
        new_map["properties"].pop("mv_f16", None)
        excludes.discard("mv_f16")
    new_map["_source"] = {"excludes": sorted(excludes)}
    meta = copy.deepcopy((mapping.get("_meta") or {}).get("osneural") or {})
    meta["codecs"] = codec_meta(bundle)
    meta.setdefault("fields", {})["fde"] = {"dim": fde.fde_dim, "data_type": fde.data_type}
    if args.no_float_tokens:
        meta["representations"] = [r for r in meta.get("representations", []) if r != "float_tokens"]
    meta["recoded"] = {"from": source, "argv": list(argv or sys.argv[1:])}
    generation = new_generation()  # the query side accepts codecs of this build only
    meta["codec_generation"] = generation
    new_map["_meta"] = {"osneural": meta}
    settings = client.indices.get_settings(index=source, flat_settings=True)[source]["settings"]
    keep = {k: v for k, v in settings.items() if k.startswith("index.knn")}
    keep.update({"index.number_of_shards": 1, "index.number_of_replicas": 0,
                 "index.refresh_interval": "30s"})
    if client.indices.exists(index=target):
        client.indices.delete(index=target)
    delete_codecs(client, target)
    save_codecs(client, target, bundle, generation=generation)
    client.indices.create(index=target, body={"settings": keep, "mappings": new_map})

    # 3. Documents, in batches, through the ingestion's document builder.
    mdims = [m for m in (meta.get("fields") or {}).get("matryoshka") or []
             if f"dense_{m}" in props]
    float_tokens = "mv_f16" in new_map["properties"]

    def actions() -> Iterator[dict[str, Any]]:
        def batches() -> Iterator[list[dict[str, Any]]]:
            for i in range(0, len(head), args.bulk_docs):
                yield head[i : i + args.bulk_docs]
            batch: list[dict[str, Any]] = []
            for doc in stream:
                doc["tokens"] = tokens_of(doc)
                batch.append(doc)
                if len(batch) == args.bulk_docs:
                    yield batch
                    batch = []
            if batch:
                yield batch

        for batch in batches():
            dense = np.asarray([d["dense"] for d in batch], dtype=np.float32)
            tokens = [d["tokens"] for d in batch]
            codes = bundle.binary.encode(dense) if bundle.binary is not None else None
            enc = EncodedBatch(
                dense=dense if "dense" in props else None,
                sparse=[top_sparse(d["sparse"] or {}, args.sparse_top) for d in batch]
                if "sparse" in props else None,
                bin_code=codes,
                bin_tokens=code_tokens(codes, int(bundle.params["mih_m"]),
                                       n_bits=bundle.binary.n_bits) if codes is not None else None,
                dense_pq=bundle.pq_dense.encode(dense) if bundle.pq_dense is not None else None,
                mv_codes=[bundle.pq_tokens.encode(t) for t in tokens],
                fde=fde.encode_documents(tokens),
                mv_f16=[t.astype(np.float16) for t in tokens] if float_tokens else None,
            )
            docs = [CorpusDocument(id=d["id"], title=d["title"], text=d["text"],
                                   fields=d["fields"]) for d in batch]
            enc.matryoshka = {int(m): matryoshka(dense, int(m)) for m in mdims}
            yield from build_documents(docs, enc, index=target)

    ok, errors = helpers.bulk(client, actions(), chunk_size=args.bulk_docs,
                              max_chunk_bytes=32 << 20, request_timeout=600, max_retries=5,
                              initial_backoff=2, raise_on_error=True)
    client.indices.refresh(index=target)
    count = int(client.count(index=target)["count"])
    print(f"{target}: {ok} documents written, {count} in the index "
          f"({time.perf_counter() - t0:.0f}s)", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Re-derive the binary-token fields of an existing index from its stored dense vectors.

The MIH substring count decides recall of the binary first stage (shorter substrings: near codes
share more terms), and it is a pure function of the dense vector and the stored binary quantizer.
So changing it needs no encoder pass: read `dense` back (`osneural.mappings.stored_vectors`),
re-cut, and partially update `bin_tokens` and `bin_code`. The codec document and `_meta` are
updated last, under a new codec generation; queries during the run may see documents cut both
ways, so run it before serving traffic from the index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from osneural.ingest.bulk import BulkWriter
from osneural.ingest.codec_store import load_codecs, new_generation, save_codecs
from osneural.ingest.documents import b64, unb64
from osneural.mappings.stored_vectors import read_vector, request_parts, vector_fields

from osneural.codecs.mih import code_tokens


def recode_binary(client: Any, index: str, mih_m: int, *, batch_size: int = 500) -> int:
    """Rewrite `bin_tokens`/`bin_code` of every document with `mih_m` substrings; returns the
    number of documents updated. Raises if the index has no binary codec or no stored dense."""
    from opensearchpy import helpers

    bundle = load_codecs(client, index)
    if bundle is None or bundle.binary is None:
        raise ValueError(f"index {index!r} has no binary codec in the codec store; ingest with 'binary'")
    bq = bundle.binary
    if not 1 <= mih_m <= bq.n_bits:
        raise ValueError(f"mih_m must lie in 1..{bq.n_bits}, got {mih_m}")

    # A partial update re-indexes the document from `_source`, which would silently drop the
    # fields kept out of it: `mv_codes` (read from doc values) and, on indices that keep them out
    # too, the vectors (read from the vector index): every one is written back with the update.
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]
    vectors = vector_fields(mapping)
    if "dense" not in vectors:
        raise ValueError(f"index {index!r} has no dense field to recode the binary codes from")
    hidden_vectors = [f for f, v in vectors.items() if not v.in_source]
    hidden = [f for f in (mapping.get("_source") or {}).get("excludes") or []
              if f not in vectors and f in (mapping.get("properties") or {})]
    source, scripts = request_parts(vectors, ["dense", *[f for f in hidden_vectors if f != "dense"]])
    query = {"_source": source or False, "docvalue_fields": hidden, "script_fields": scripts}

    def batches():
        ids: list[str] = []
        rows: list[list[float]] = []
        kept: list[dict[str, Any]] = []
        for hit in helpers.scan(client, index=index, query=query, size=batch_size):
            vec = read_vector(hit, vectors["dense"])
            if vec is None:
                continue
            ids.append(hit["_id"])
            rows.append(vec)
            fields = hit.get("fields") or {}
            extra: dict[str, Any] = {f: b64(unb64(fields[f][0])) for f in hidden if fields.get(f)}
            for f in hidden_vectors:
                value = vec if f == "dense" else read_vector(hit, vectors[f])
                if value is not None:
                    extra[f] = value
            kept.append(extra)
            if len(ids) == batch_size:
                yield ids, rows, kept
                ids, rows, kept = [], [], []
        if ids:
            yield ids, rows, kept

    writer = BulkWriter(client, index)
    updated = 0
    for ids, rows, kept in batches():
        codes = bq.encode(np.asarray(rows, dtype=np.float32))
        tokens = code_tokens(codes, mih_m, n_bits=bq.n_bits)
        actions = [{"_op_type": "update", "_index": index, "_id": doc_id,
                    "doc": {"bin_tokens": toks, "bin_code": b64(code), **extra}}
                   for doc_id, toks, code, extra in zip(ids, tokens, codes, kept, strict=True)]
        result = writer.write(actions)
        if result.failures:
            first = result.failures[0]
            raise RuntimeError(f"recode of {index!r}: {len(result.failures)} updates failed, e.g. "
                               f"document {first.doc_id!r}: {first.reason}; rerun to finish")
        updated += result.indexed
    bundle.params["mih_m"] = int(mih_m)
    # New codec parameters are a new generation: query nodes holding the old cut reload.
    generation = new_generation()
    save_codecs(client, index, bundle, generation=generation)
    from osneural.ingest.codec_training import codec_meta

    meta = client.indices.get_mapping(index=index)[index]["mappings"].get("_meta") or {}
    meta.setdefault("osneural", {})["codecs"] = codec_meta(bundle)
    meta["osneural"]["codec_generation"] = generation
    client.indices.put_mapping(index=index, body={"_meta": meta})
    client.indices.refresh(index=index)
    return updated

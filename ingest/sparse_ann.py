"""Write an index's sparse weights into its SEISMIC companion index (`<index>-sparse-ann`).

The main index keeps its `rank_features` field (the exact stage, and what this reads); the
companion holds the same weights in neural-search's `sparse_vector` field keyed by vocabulary id,
for the `sparse` stage with `method: seismic`. Building it from the index rather than from the
corpus means no document is encoded twice and an index built earlier gains the stage without
re-ingestion; `sync` rebuilds it after more documents were added (writes are idempotent by id).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from osneural.ingest.documents import sparse_token_from_feature
from osneural.mappings.sparse_ann import (
    FIELD,
    SeismicParams,
    companion_index,
    seismic_index_body,
)
from osneural.plugin.sparse_ann import check_cluster, token_ids


@dataclass
class SparseAnnSummary:
    index: str
    companion: str
    written: int = 0
    skipped: int = 0  # documents without sparse weights (empty documents)
    seconds: float = 0.0


def sparse_vocab(encoder: Any | None = None) -> dict[str, int]:
    """token -> vocabulary id of the sparse encoder (the default exported one unless given)."""
    if encoder is None:
        from osneural.encoders import load_default

        encoder = load_default("sparse")
    return dict(encoder.tokenizer.get_vocab(with_added_tokens=True))


def companion_documents(hits: Iterator[Mapping[str, Any]], vocab: Mapping[str, int],
                        summary: SparseAnnSummary, field: str = "sparse"
                        ) -> Iterator[dict[str, Any]]:
    """Bulk index actions for the companion from the main index's hits (`_id`, `_source.sparse`)."""
    for hit in hits:
        weights = (hit.get("_source") or {}).get(field)
        if not weights:
            summary.skipped += 1
            continue
        tokens = {sparse_token_from_feature(k): v for k, v in weights.items()}
        ids = token_ids(tokens, vocab, where=f"document {hit['_id']}: {field}")
        yield {"_index": summary.companion, "_id": hit["_id"], "_source": {FIELD: ids}}


def build_sparse_ann(client: Any, index: str, params: SeismicParams = SeismicParams(), *,  # noqa: B008 - frozen
                     vocab: Mapping[str, int] | None = None, source_field: str = "sparse",
                     recreate: bool = False, chunk_size: int = 500,
                     force_merge: bool = True) -> SparseAnnSummary:
    """Create (or fill) `<index>-sparse-ann` from `index`'s sparse weights.

    `force_merge` merges the companion to one segment: SEISMIC builds its clustered postings
    per segment and only for segments of at least `approximate_threshold` documents, so many
    small segments would all be scored exactly."""
    import time

    from opensearchpy import helpers

    check_cluster(client)
    vocab = sparse_vocab() if vocab is None else vocab
    companion = companion_index(index)
    summary = SparseAnnSummary(index, companion)
    t0 = time.perf_counter()
    if recreate:
        client.indices.delete(index=companion, ignore_unavailable=True)
    if not client.indices.exists(index=companion):
        shards = int(client.indices.get_settings(index=index)[next(iter(
            client.indices.get_settings(index=index)))]["settings"]["index"]["number_of_shards"])
        client.indices.create(index=companion, body=seismic_index_body(params, shards=shards))
    hits = helpers.scan(client, index=index, query={"query": {"match_all": {}}},
                        _source_includes=[source_field], size=chunk_size, preserve_order=False)
    ok, errors = helpers.bulk(client, companion_documents(hits, vocab, summary, source_field),
                              chunk_size=chunk_size, raise_on_error=False, stats_only=False)
    if errors:
        raise RuntimeError(f"{companion}: {len(errors)} documents were refused, first: {errors[0]}")
    summary.written = ok
    client.indices.refresh(index=companion, request_timeout=3600)  # SEISMIC builds at flush
    if force_merge:
        client.indices.forcemerge(index=companion, max_num_segments=1, request_timeout=3600)
        client.indices.refresh(index=companion, request_timeout=3600)  # SEISMIC builds at flush
    summary.seconds = time.perf_counter() - t0
    return summary

"""`sparse`: the dot product of the query's and the documents' sparse (SPLADE) vectors, as
`rank_feature` clauses; the query weights come from the model, from the index's IDF table
(`inference_free`), or from the cluster's ml-commons model (`encode: cluster`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from osneural.plugin import cluster_encoding
from osneural.plugin.stages.base import FirstStageType, StageContext, StageSpec
from pydantic import Field


class SparseStage(StageSpec):
    type: Literal["sparse"] = "sparse"
    k: int = Field(100, ge=1, le=10_000)
    mode: Literal["model", "inference_free"] = "model"
    # Query terms kept (highest weight first); bounds the bool clause count.
    max_terms: int = Field(64, ge=1, le=1024)
    field: str = "sparse"
    # "cluster": the query is encoded by the index's ml-commons model (plugin/cluster_encoding.py)
    encode: Literal["local", "cluster"] = "local"
    model_id: str | None = None
    # "seismic": neural-search's sparse ANN on the `<index>-sparse-ann` companion index
    # (osneural.plugin.sparse_ann); top_n / heap_factor are its query-time method_parameters
    method: Literal["rank_features", "seismic"] = "rank_features"
    top_n: int | None = Field(None, ge=1, le=1024)
    heap_factor: float | None = Field(None, gt=0)


def positive_weights(weights: Mapping[str, float]) -> Iterator[tuple[str, float]]:
    """The query terms a sparse dot product can use: finite, positive weights (SPLADE's ReLU
    output is never negative; a zero or NaN weight would only add a clause that scores nothing)."""
    for token, weight in weights.items():
        w = float(weight)
        if np.isfinite(w) and w > 0:
            yield token, w


def sparse_query(
    stage: SparseStage, weights: Mapping[str, float], filter_clause: dict | None = None
) -> dict:
    """Dot product of the query's and the document's sparse vectors as rank_feature clauses.

    `rank_feature` with the `linear` function scores `boost * doc_weight`, so a should-sum over the
    query's terms with boost = query weight is the sparse dot product (up to the ~9 significant
    bits OpenSearch keeps for a feature value). Field names go through the same sanitizer the
    ingestion used, so a token that needed escaping still meets its document feature.
    """
    from osneural.ingest.documents import sparse_feature_name

    merged: dict[str, float] = {}
    for token, w in positive_weights(weights):
        name = sparse_feature_name(token)
        merged[name] = merged.get(name, 0.0) + w
    top = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[: stage.max_terms]
    if not top:
        raise ValueError("sparse: the query has no positive-weight terms")
    should = [
        {"rank_feature": {"field": f"{stage.field}.{name}", "linear": {}, "boost": w}}
        for name, w in top
    ]
    query: dict[str, Any] = {"bool": {"should": should, "minimum_should_match": 1}}
    if filter_clause is not None:
        query["bool"]["filter"] = [filter_clause]
    return query


class Sparse(FirstStageType):
    spec = SparseStage

    def encoder_kinds(self, stage: SparseStage) -> tuple[str, ...]:
        return () if stage.encode == "cluster" else ("sparse",)

    def needs_codecs(self, stage: SparseStage) -> bool:
        return stage.mode == "inference_free"  # the IDF table lives in the codec bundle

    def query(self, stage: SparseStage, ctx: StageContext) -> dict[str, Any]:
        weights = cluster_encoding.sparse(ctx.client, ctx.enc, stage, ctx.where)
        if stage.method == "seismic":
            from osneural.plugin.sparse_ann import stage_query

            encoder = ctx.enc.cache.encoders.checked("sparse", ctx.res, ctx.where)
            return stage_query(stage, weights, encoder, ctx.filter, ctx.where)
        return sparse_query(stage, weights, ctx.filter)

    def matched_query(self, stage: SparseStage, ctx: StageContext) -> dict[str, Any]:
        """SEISMIC ranks the same weights the index keeps as `rank_features`: the matched set
        is theirs (the companion index holds no app fields to aggregate)."""
        weights = cluster_encoding.sparse(ctx.client, ctx.enc, stage, ctx.where)
        return sparse_query(stage, weights, ctx.filter)

    def run(self, stage: SparseStage, ctx: StageContext,
            timeout_s: float | None) -> list[tuple[str, float]]:
        if stage.method == "seismic":
            from osneural.plugin.sparse_ann import stage_index

            ctx = replace(ctx, index=stage_index(ctx.index))
        return super().run(stage, ctx, timeout_s)

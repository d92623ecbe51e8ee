"""`dense`: k-NN over the index's dense vectors (HNSW), the query encoded locally or by the
cluster's ml-commons model (`encode: cluster`, see `osneural.plugin.cluster_encoding`)."""

from __future__ import annotations

from typing import Any, Literal

from osneural.plugin import cluster_encoding
from osneural.plugin.stages.base import FirstStageType, StageContext, StageSpec
from osneural.plugin.stages.knn import candidates_cover_k, knn_query
from pydantic import Field, model_validator


class DenseStage(StageSpec):
    type: Literal["dense"] = "dense"
    k: int = Field(100, ge=1, le=10_000)
    # HNSW beam width (ef_search); at least k, as a smaller beam cannot return k neighbours.
    num_candidates: int | None = Field(None, ge=1, le=10_000)
    field: str = "dense"
    # "cluster": the query is encoded by the index's ml-commons model (plugin/cluster_encoding.py)
    encode: Literal["local", "cluster"] = "local"
    model_id: str | None = None

    @model_validator(mode="after")
    def _candidates_cover_k(self) -> DenseStage:
        return candidates_cover_k(self)


def dense_query(stage: DenseStage, vector: Any, filter_clause: dict | None = None) -> dict:
    return knn_query(stage.field, vector, stage.k, stage.num_candidates, filter_clause)


class Dense(FirstStageType):
    spec = DenseStage

    def encoder_kinds(self, stage: DenseStage) -> tuple[str, ...]:
        return () if stage.encode == "cluster" else ("dense",)  # cluster: no local ONNX

    def query(self, stage: DenseStage, ctx: StageContext) -> dict[str, Any]:
        vector = cluster_encoding.dense(ctx.client, ctx.enc, stage, ctx.where)
        return dense_query(stage, vector, ctx.filter)

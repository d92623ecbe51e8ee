"""`fde`: k-NN over MUVERA fixed-dimensional encodings of the multi-vector tokens (the query's
FDE comes from its token vectors with the index's own FDE codec)."""

from __future__ import annotations

from typing import Any, Literal

from osneural.plugin.stages.base import FirstStageType, StageContext, StageSpec
from osneural.plugin.stages.knn import candidates_cover_k, knn_query
from pydantic import Field, model_validator


class FDEStage(StageSpec):
    type: Literal["fde"] = "fde"
    k: int = Field(100, ge=1, le=10_000)
    num_candidates: int | None = Field(None, ge=1, le=10_000)
    field: str = "fde"

    @model_validator(mode="after")
    def _candidates_cover_k(self) -> FDEStage:
        return candidates_cover_k(self)


def fde_query(stage: FDEStage, vector: Any, filter_clause: dict | None = None) -> dict:
    return knn_query(stage.field, vector, stage.k, stage.num_candidates, filter_clause)


class FDE(FirstStageType):
    spec = FDEStage

    def encoder_kinds(self, stage: FDEStage) -> tuple[str, ...]:
        return ("multivector",)

    def needs_codecs(self, stage: FDEStage) -> bool:
        return True

    def query(self, stage: FDEStage, ctx: StageContext) -> dict[str, Any]:
        return fde_query(stage, ctx.enc.fde(ctx.where), ctx.filter)

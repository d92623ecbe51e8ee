"""`dense` (rescoring): exact vector scores, computed inside OpenSearch by the k-NN score script
(no float vectors cross the wire)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from osneural.plugin.rescoring.base import RescoreSpec, RescoreType
from osneural.plugin.rescoring.scores import dense_exact_scores
from osneural.plugin.stages.base import StageContext
from pydantic import Field


class DenseRescore(RescoreSpec):
    type: Literal["dense"] = "dense"
    window: int = Field(100, ge=1, le=10_000)


class DenseExact(RescoreType):
    spec = DenseRescore

    def encoder_kinds(self, stage: Any) -> tuple[str, ...]:
        return ("dense",)

    def index_field(self, stage: Any) -> str:
        return "dense"

    def score(self, stage: Any, ctx: StageContext, ids: list[str], timeout_s: float) -> np.ndarray:
        return dense_exact_scores(ctx.client, ctx.index, ids, ctx.enc.dense(ctx.where), "dense",
                                  ctx.res.space_type("dense"), timeout_s, ctx.id_field)

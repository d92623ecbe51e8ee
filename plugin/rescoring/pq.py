"""`pq`: asymmetric (ADC) inner product of the float query with the PQ-coded dense vectors."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from osneural.plugin.rescoring.base import RescoreSpec, RescoreType
from osneural.plugin.rescoring.scores import pq_scores
from osneural.plugin.stages.base import StageContext
from pydantic import Field


class PQRescore(RescoreSpec):
    type: Literal["pq"] = "pq"
    window: int = Field(200, ge=1, le=10_000)


class PQ(RescoreType):
    spec = PQRescore

    def encoder_kinds(self, stage: Any) -> tuple[str, ...]:
        return ("dense",)

    def needs_codecs(self, stage: Any) -> bool:
        return True

    def index_field(self, stage: Any) -> str:
        return "dense_pq"

    def score(self, stage: Any, ctx: StageContext, ids: list[str], timeout_s: float) -> np.ndarray:
        pq = ctx.res.codec("pq_dense", ctx.where)
        lut = pq.lookup_table(ctx.enc.dense(ctx.where), metric="ip")
        raw = ctx.fetch_codes(ids, "dense_pq", timeout_s)
        return pq_scores(lut, raw, ids, "dense_pq")

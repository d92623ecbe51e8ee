"""`hamming`: exact Hamming similarity of the stored binary codes (`bin_code`) to the query's."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from osneural.plugin.rescoring.base import RescoreSpec, RescoreType
from osneural.plugin.rescoring.scores import hamming_scores
from osneural.plugin.stages.base import StageContext
from pydantic import Field


class HammingRescore(RescoreSpec):
    type: Literal["hamming"] = "hamming"
    window: int = Field(1000, ge=1, le=10_000)


class Hamming(RescoreType):
    spec = HammingRescore

    def encoder_kinds(self, stage: Any) -> tuple[str, ...]:
        return ("dense",)

    def needs_codecs(self, stage: Any) -> bool:
        return True

    def index_field(self, stage: Any) -> str:
        return "bin_code"

    def score(self, stage: Any, ctx: StageContext, ids: list[str], timeout_s: float) -> np.ndarray:
        bq = ctx.res.codec("binary", ctx.where)
        code = ctx.enc.binary_code(ctx.where)
        raw = ctx.fetch_codes(ids, "bin_code", timeout_s)
        return hamming_scores(code, raw, ids, bq.n_bits, "bin_code")

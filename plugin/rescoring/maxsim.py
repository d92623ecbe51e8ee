"""`maxsim`: late-interaction MaxSim of the query tokens against each document's stored tokens,
coded (`mv_codes`, every multi-vector index: PQ or 1-2 bit codes, as the index's codecs say) or float16 (`mv_f16`, the `float_tokens`
representation)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from osneural.plugin.rescoring.base import RescoreSpec, RescoreType
from osneural.plugin.rescoring.scores import maxsim_float16_scores, maxsim_scores
from osneural.plugin.stages.base import StageContext
from pydantic import Field

from osneural.errors import StageError

#: field of each stored token form ("pq" names the coded tokens, whatever their codec)
TOKEN_FIELDS = {"pq": "mv_codes", "float16": "mv_f16"}


class MaxSimRescore(RescoreSpec):
    """`tokens` picks the stored token form: "pq", the coded tokens every multi-vector index
    has (`mv_codes`: 2-bit codes by default, PQ codes in indices built with `--token-code pq` or
    by earlier versions; the name predates bit codes), or "float16", the copies an index built
    with the `float_tokens` representation also holds."""

    type: Literal["maxsim"] = "maxsim"
    window: int = Field(100, ge=1, le=10_000)
    tokens: Literal["pq", "float16"] = "pq"


class MaxSim(RescoreType):
    spec = MaxSimRescore

    def encoder_kinds(self, stage: MaxSimRescore) -> tuple[str, ...]:
        return ("multivector",)

    def needs_codecs(self, stage: MaxSimRescore) -> bool:
        return stage.tokens == "pq"  # the PQ codebooks decode the tokens

    def index_field(self, stage: MaxSimRescore) -> str:
        return TOKEN_FIELDS[stage.tokens]

    def prepare(self, stage: MaxSimRescore, ctx: StageContext) -> None:
        ctx.enc.tokens(ctx.where)  # a whole model pass: worth overlapping with the first stages

    def score(self, stage: MaxSimRescore, ctx: StageContext, ids: list[str],
              timeout_s: float) -> np.ndarray:
        q = ctx.enc.tokens(ctx.where)
        field = self.index_field(stage)
        raw = ctx.fetch_codes(ids, field, timeout_s)
        if stage.tokens == "float16":
            return maxsim_float16_scores(q, raw, ids, field)
        codec = ctx.res.codecs.token_codec  # PQ, or bit codes (osneural.codecs.residual)
        if codec is None:
            raise StageError(f"{ctx.where}: index {ctx.index!r} has no token codec")
        return maxsim_scores(q, raw, ids, codec, field)

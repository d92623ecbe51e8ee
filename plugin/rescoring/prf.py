"""`prf`: pseudo-relevance feedback in the rescoring sequence (its model and logic live in
`osneural.plugin.prf`); it acts on the whole ranking, so it `reranks` instead of scoring a
window."""

from __future__ import annotations

from typing import Any

from osneural.plugin import prf
from osneural.plugin.prf import PRFStage
from osneural.plugin.rescoring.base import RescoreType


class PRF(RescoreType):
    spec = PRFStage
    reranks = True

    def encoder_kinds(self, stage: PRFStage) -> tuple[str, ...]:
        return (stage.mode,)  # Rocchio moves the dense vector, ColBERT-PRF adds tokens

    def needs_codecs(self, stage: PRFStage) -> bool:
        return stage.mode == "multivector"  # the feedback tokens are decoded with the codebooks

    def added_candidates(self, stage: PRFStage) -> int:
        return stage.k if stage.mode == "dense" else 0  # Rocchio's second kNN brings in k

    def rerank(self, searcher: Any, stage: PRFStage, where: str, enc: Any,
               candidates: list[tuple[str, float]], spec: Any, timeout_s: float,
               warnings: list[str], timings: dict[str, float]) -> list[tuple[str, float]]:
        return prf.run_stage(searcher, stage, where, enc, candidates, spec, timeout_s, warnings,
                             timings)

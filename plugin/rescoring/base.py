"""What a rescoring stage is: a spec model and a score over a window of candidates.

A rescoring type scores the top `window` candidates (`score`: one value per id, NaN where a
document has none); the `Searcher` runs it under the query's deadline, blends the scores with
the incoming ranking (`combine`) and re-orders the window. A type whose work is not a window
score -- pseudo-relevance feedback, which may bring in new documents -- sets `reranks` and
implements `rerank` over the whole ranking instead.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from osneural.plugin.stages.base import StageContext, StageSpec, StageType
from pydantic import Field

from osneural.errors import SpecError


class RescoreSpec(StageSpec):
    """How a rescoring stage's score meets the ranking it re-ranks.

    `replace` orders the window by the new score alone (right when the new score is strictly
    better, e.g. exact dense after PQ). `rrf` and `linear` blend it with the incoming ranking,
    `weight` being the new score's share: a late-interaction model that was never trained for
    the corpus (MiniLM tokens) then refines a strong hybrid instead of overriding it.
    """

    combine: Literal["replace", "rrf", "linear"] = "replace"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    rank_constant: int = Field(60, ge=0)


class RescoreType(StageType):
    """A rescoring stage type; `score` is what a windowed one implements."""

    #: True: `rerank` replaces the windowed scoring (the stage acts on the whole ranking)
    reranks: ClassVar[bool] = False

    def added_candidates(self, stage: Any) -> int:
        """Documents the stage may add to the ranking beyond the first stages' (the paging
        depth counts them); a windowed stage only re-orders."""
        return 0

    def prepare(self, stage: Any, ctx: StageContext) -> None:
        """Compute what the stage needs from the query alone (its query encoding), so that the
        `Searcher` can run it beside the first stages, which mostly wait on OpenSearch, instead
        of after them. The result is memoised in `ctx.enc`; a failure here is ignored and met
        again, and reported, when the stage itself runs."""

    def score(self, stage: Any, ctx: StageContext, ids: list[str], timeout_s: float) -> np.ndarray:
        """One score per id of the window, NaN where the document has no value."""
        raise SpecError(f"rescoring stage {self.type_name()!r} scores no window")

    def rerank(
        self, searcher: Any, stage: Any, where: str, enc: Any,
        candidates: list[tuple[str, float]], spec: Any, timeout_s: float,
        warnings: list[str], timings: dict[str, float],
    ) -> list[tuple[str, float]]:
        """The new ranking (for `reranks` types); failures degrade to warnings."""
        raise NotImplementedError

"""`bm25`: OpenSearch's own lexical scoring over text fields (a `multi_match`)."""

from __future__ import annotations

from typing import Any, Literal

from osneural.plugin.stages.base import FirstStageType, StageContext, StageSpec
from osneural.plugin.stages.request import with_filter
from pydantic import Field

from osneural.errors import StageError


class BM25Stage(StageSpec):
    type: Literal["bm25"] = "bm25"
    k: int = Field(100, ge=1, le=10_000)
    fields: list[str] = Field(default_factory=lambda: ["title^1.2", "text"], min_length=1)


def bm25_query(stage: BM25Stage, text: str, filter_clause: dict[str, Any] | None = None) -> dict:
    mm = {"multi_match": {"query": text, "fields": list(stage.fields), "type": "best_fields"}}
    return with_filter(mm, filter_clause)


class BM25(FirstStageType):
    """Needs no encoder; its fields are its own parameter (`title^1.2`: a boosted field)."""

    spec = BM25Stage

    def index_field(self, stage: BM25Stage) -> str | None:
        return None

    def check_index(self, stage: BM25Stage, res: Any, label: str) -> None:
        missing = [f for f in stage.fields if f.split("^")[0] not in res.fields and "*" not in f]
        if missing:
            raise StageError(f"{label}: index {res.index!r} has no field(s) {missing}")

    def query(self, stage: BM25Stage, ctx: StageContext) -> dict[str, Any]:
        return bm25_query(stage, ctx.text, ctx.filter)

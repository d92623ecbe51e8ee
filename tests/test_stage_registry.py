"""Stage types are found through registries: a first stage defined here, in the test, and
registered with one call is parsed from a spec, checked against the index and answers through
`Searcher` against a real node, like the built-in ones."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
from osneural.plugin.rescoring import (
    RESCORERS,
    RescoreSpec,
    RescoreType,
    register_rescorer,
    unregister_rescorer,
)
from osneural.plugin.resources import ResourceCache, spec_encoder_kinds, spec_needs_codecs
from osneural.plugin.searcher import Searcher
from osneural.plugin.spec import parse_spec
from osneural.plugin.stages import (
    FIRST_STAGES,
    FirstStageType,
    StageContext,
    StageSpec,
    register_stage,
    unregister_stage,
    with_filter,
)
from pydantic import Field

from osneural.errors import SpecError, StageError


class TagStage(StageSpec):
    """Documents whose keyword `field` equals the query text."""

    type: Literal["tag"] = "tag"
    k: int = Field(10, ge=1, le=10_000)
    field: str = "tag"


class Tag(FirstStageType):
    spec = TagStage

    def query(self, stage: TagStage, ctx: StageContext) -> dict[str, Any]:
        return with_filter({"term": {stage.field: ctx.text}}, ctx.filter)


class ByIdRescore(RescoreSpec):
    """Scores a window by the number in its ids (`d3` -> 3): an order no first stage gives."""

    type: Literal["by_id"] = "by_id"
    window: int = Field(10, ge=1, le=10_000)


class ById(RescoreType):
    spec = ByIdRescore

    def index_field(self, stage: ByIdRescore) -> None:
        return None

    def score(self, stage: ByIdRescore, ctx: StageContext, ids: list[str],
              timeout_s: float) -> np.ndarray:
        return np.array([float(i[1:]) for i in ids])


@pytest.fixture
def by_id_rescorer():
    register_rescorer(ById)
    yield
    unregister_rescorer("by_id")


@pytest.fixture
def tag_stage():
    register_stage(Tag)
    yield
    unregister_stage("tag")


def test_built_in_stage_types_are_registered_in_spec_order() -> None:
    assert FIRST_STAGES.names() == ("bm25", "dense", "sparse", "binary", "fde")
    assert RESCORERS.names() == ("hamming", "pq", "dense", "maxsim", "prf")


def test_an_unregistered_type_is_a_spec_error_naming_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"first_stages\[0\]: unknown type 'tag'"):
        parse_spec({"first_stages": [{"type": "tag"}]})
    with pytest.raises(SpecError, match="unknown first stage type 'tag'"):
        FIRST_STAGES.get("tag")


def test_registering_a_taken_name_needs_replace(tag_stage) -> None:
    with pytest.raises(ValueError, match="'tag' is already registered"):
        register_stage(Tag)
    register_stage(Tag, replace=True)  # an application may override a type on purpose
    with pytest.raises(TypeError, match="FirstStageType"):
        register_stage(object())


def test_a_registered_stage_is_parsed_validated_and_serialized(tag_stage) -> None:
    spec = parse_spec({"first_stages": [{"type": "tag", "k": 3}, {"type": "bm25"}]})
    assert isinstance(spec.first_stages[0], TagStage) and spec.first_stages[0].k == 3
    assert spec.to_dict()["first_stages"][0] == {"type": "tag", "k": 3, "field": "tag"}
    with pytest.raises(SpecError, match=r"first_stages\[0\]\.k"):
        parse_spec({"first_stages": [{"type": "tag", "k": 0}]})
    with pytest.raises(SpecError, match=r"first_stages\[0\]\.fields: unknown field"):
        parse_spec({"first_stages": [{"type": "tag", "fields": ["x"]}]})
    assert spec_encoder_kinds(spec) == [] and not spec_needs_codecs(spec)  # the defaults


def test_a_stage_defined_in_a_test_answers_through_the_searcher(
    tag_stage, opensearch_client, index_name
) -> None:
    opensearch_client.indices.create(index=index_name, body={"mappings": {"properties": {
        "tag": {"type": "keyword"}, "title": {"type": "text"}, "text": {"type": "text"},
        "lang": {"type": "keyword"}}}})
    docs = {"d1": ("red", "en"), "d2": ("blue", "en"), "d3": ("red", "fr"), "d4": ("red", "en")}
    for doc_id, (tag, lang) in docs.items():
        opensearch_client.index(index=index_name, id=doc_id, body={
            "tag": tag, "lang": lang, "title": f"a {tag} thing", "text": "words"})
    opensearch_client.indices.refresh(index=index_name)
    searcher = Searcher(opensearch_client, index_name, cache=ResourceCache())
    try:
        out = searcher.search("red", {"first_stages": [{"type": "tag"}]})
        assert [h["_id"] for h in out["hits"]["hits"]] == ["d1", "d3", "d4"]  # ties by _id
        assert out["ext"]["osneural"]["warnings"] == []
        assert "first_stage.tag" in out["ext"]["osneural"]["timings_ms"]
        # the spec's filter reaches the stage's query through the context
        filtered = searcher.search("red", {"first_stages": [{"type": "tag"}],
                                           "filter": {"term": {"lang": "en"}}})
        assert [h["_id"] for h in filtered["hits"]["hits"]] == ["d1", "d4"]
        # fused with a built-in stage and explained under its own name
        both = searcher.search("red", {"first_stages": [{"type": "tag"}, {"type": "bm25"}],
                                       "explain": True})
        first = both["hits"]["hits"][0]["_explanation"]["first_stages"]
        assert set(first) == {"tag", "bm25"}
        # the base class checks the stage's field against the index: a 400 naming the stage
        with pytest.raises(StageError, match=r"first_stages\[0\] \(tag\): .* has no field 'color'"):
            searcher.search("red", {"first_stages": [{"type": "tag", "field": "color"}]})
    finally:
        searcher.close()


def test_a_rescoring_stage_defined_in_a_test_reorders_the_window(
    tag_stage, by_id_rescorer, opensearch_client, index_name
) -> None:
    opensearch_client.indices.create(index=index_name, body={"mappings": {"properties": {
        "tag": {"type": "keyword"}}}})
    for n in range(1, 6):
        opensearch_client.index(index=index_name, id=f"d{n}", body={"tag": "red"})
    opensearch_client.indices.refresh(index=index_name)
    searcher = Searcher(opensearch_client, index_name, cache=ResourceCache())
    try:
        spec = {"first_stages": [{"type": "tag"}], "rescore": [{"type": "by_id", "window": 3}]}
        out = searcher.search("red", spec)
        # the window (d1..d3, tied first-stage scores ordered by id) re-ranked by its own score;
        # the tail keeps its order below it
        assert [h["_id"] for h in out["hits"]["hits"]] == ["d3", "d2", "d1", "d4", "d5"]
        assert "rescore.by_id" in out["ext"]["osneural"]["timings_ms"]
        assert parse_spec(spec).rescore[0].combine == "replace"  # the RescoreSpec defaults
    finally:
        searcher.close()
    with pytest.raises(SpecError, match=r"rescore\[0\]: unknown type 'nope'"):
        parse_spec({"rescore": [{"type": "nope"}]})

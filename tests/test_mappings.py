"""Mapping templates: composition, placeholders, validation (offline) and acceptance by a real node."""

from __future__ import annotations

import pytest
from osneural.mappings import (
    KNN_DERIVED_SOURCE,
    REPRESENTATIONS,
    MappingConflict,
    app_mapping_from_json,
    compose_index_body,
    default_representations,
    field_names,
    load_template,
    merge_app_mapping,
    normalize_representations,
    reserved_field,
    vectors_out_of_source,
)


def _props(body: dict) -> dict:
    return body["mappings"]["properties"]


def test_every_representation_has_a_template() -> None:
    for rep in REPRESENTATIONS:
        assert load_template(rep)["properties"], rep
    assert set(default_representations()) == set(REPRESENTATIONS) - {"float_tokens"}


def test_unknown_template_and_representation_are_named() -> None:
    with pytest.raises(ValueError, match="nope"):
        load_template("nope")
    with pytest.raises(ValueError, match="desne"):
        normalize_representations("dense,desne")


def test_normalize_adds_text_and_keeps_template_order() -> None:
    assert normalize_representations("multivector, dense") == ["text", "dense", "multivector"]
    assert normalize_representations(["sparse"]) == ["text", "sparse"]
    assert normalize_representations("all") == list(REPRESENTATIONS)


def test_default_body_has_every_field_with_typed_values() -> None:
    body = compose_index_body(None, dense_dim=384, fde_dim=1024, meta={"schema_version": 1})
    props = _props(body)
    assert body["settings"]["index"]["knn"] is True
    assert props["dense"]["dimension"] == 384 and isinstance(props["dense"]["dimension"], int)
    assert props["dense"]["space_type"] == "cosinesimil"
    assert props["dense"]["method"]["engine"] == "lucene"
    assert props["sparse"]["type"] == "rank_features"
    assert props["bin_tokens"] == {"type": "keyword", "index_options": "docs", "norms": False,
                                   "doc_values": False}
    assert props["bin_code"] == {"type": "binary", "doc_values": True}
    assert props["dense_pq"] == {"type": "binary", "doc_values": True}
    assert props["mv_codes"] == {"type": "binary", "doc_values": True}
    assert props["fde"]["dimension"] == 1024 and props["fde"]["space_type"] == "innerproduct"
    assert body["mappings"]["_source"]["excludes"] == ["mv_codes"]
    assert body["mappings"]["_meta"] == {"osneural": {"schema_version": 1}}
    assert "{{" not in str(body)


def test_only_chosen_fields_and_matryoshka() -> None:
    body = compose_index_body(["dense"], dense_dim=64, matryoshka_dims=[32, 16],
                              space_type="innerproduct", engine="faiss")
    props = _props(body)
    assert set(props) == {"title", "text", "osneural_id", "dense", "dense_16", "dense_32"}
    assert props["dense_16"]["dimension"] == 16 and props["dense"]["dimension"] == 64
    assert props["dense_32"]["space_type"] == "innerproduct"
    assert props["dense_32"]["method"]["engine"] == "faiss"
    assert "_source" not in body["mappings"]
    assert field_names(["dense"], [16]) == ["title", "text", "osneural_id", "dense", "dense_16"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"space_type": "l3"}, "space_type"),
        ({"engine": "nmslib2"}, "engine"),
        ({"text_analyzer": "klingon"}, "text_analyzer"),
        ({"dense_dim": 0}, "dense_dim"),
        ({"matryoshka_dims": [384]}, "Matryoshka"),
        ({"representations": ["multivector"], "fde_dim": None}, "fde_dim"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict, match: str) -> None:
    reps = kwargs.pop("representations", ["dense"])
    with pytest.raises(ValueError, match=match):
        compose_index_body(reps, **kwargs)


@pytest.mark.integration
def test_real_node_accepts_default_body_and_returns_meta(opensearch_client, index_name) -> None:
    meta = {"schema_version": 1, "representations": list(REPRESENTATIONS)}
    body = compose_index_body(None, dense_dim=8, fde_dim=16, matryoshka_dims=[4], meta=meta)
    opensearch_client.indices.create(index=index_name, body=body)
    got = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]
    assert got["_meta"]["osneural"] == meta
    assert got["properties"]["dense_4"]["dimension"] == 4
    assert got["properties"]["mv_codes"]["doc_values"] is True
    # an app's own field is mapped by OpenSearch as it comes
    opensearch_client.index(index=index_name, body={"category": "x", "price": 3}, refresh=True)
    got = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]
    assert got["properties"]["price"]["type"] == "long"
    assert got["properties"]["category"]["fields"]["keyword"]["type"] == "keyword"


def test_app_mapping_is_merged_and_conflicts_are_named() -> None:
    app, settings = app_mapping_from_json(
        {"mappings": {"properties": {"price": {"type": "float"}}, "dynamic": "strict",
                      "_meta": {"team": "shop"}},
         "settings": {"analysis": {"analyzer": {"a": {"type": "standard"}}}}}, "f.json")
    body = merge_app_mapping(compose_index_body(["sparse"], meta={"x": 1}), app, settings)
    assert _props(body)["price"] == {"type": "float"} and "sparse" in _props(body)
    assert body["mappings"]["dynamic"] == "strict"
    assert body["mappings"]["_meta"] == {"team": "shop", "osneural": {"x": 1}}
    assert body["settings"]["index"]["analysis"] == {"analyzer": {"a": {"type": "standard"}}}
    for name in ("sparse", "title", "dense_64", "mv_codes", "osneural_id"):
        with pytest.raises(MappingConflict, match=f"f.json: field '{name}' is one of osneural"):
            app_mapping_from_json({"properties": {name: {"type": "keyword"}}}, "f.json")
    with pytest.raises(ValueError, match="f.json: a mapping must be a JSON object"):
        app_mapping_from_json([1], "f.json")
    with pytest.raises(ValueError, match="unknown mapping key"):
        app_mapping_from_json({"propertys": {}}, "f.json")
    assert reserved_field("dense_128") and not reserved_field("densely") and not reserved_field("metadata")


def test_vectors_leave_source_only_when_the_mapping_excludes_a_field() -> None:
    body = compose_index_body(["dense", "multivector"], dense_dim=8, fde_dim=16,
                              matryoshka_dims=[4])
    assert vectors_out_of_source(body) == ["dense", "dense_4", "fde"]
    assert body["mappings"]["_source"]["excludes"] == ["dense", "dense_4", "fde", "mv_codes"]
    assert body["settings"]["index"][KNN_DERIVED_SOURCE] is False
    assert vectors_out_of_source(body) == []  # the setting is now there: a second call is a no-op

    # no exclusion: the k-NN derived source keeps the vectors out of the stored _source already
    plain = compose_index_body(["dense", "sparse"], dense_dim=8)
    assert vectors_out_of_source(plain) == []
    assert "_source" not in plain["mappings"] and KNN_DERIVED_SOURCE not in plain["settings"]["index"]

    # a user's own choice of the setting is left alone
    chosen = compose_index_body(["dense", "multivector"], dense_dim=8, fde_dim=16)
    merge_app_mapping(chosen, None, {"index.knn.derived_source.enabled": True})
    assert vectors_out_of_source(chosen) == []
    assert chosen["mappings"]["_source"]["excludes"] == ["mv_codes"]

    # a cluster whose k-NN has no derived source still keeps the vectors' JSON out
    old = compose_index_body(["dense", "multivector"], dense_dim=8, fde_dim=16)
    assert vectors_out_of_source(old, derived_source_setting=False) == ["dense", "fde"]
    assert KNN_DERIVED_SOURCE not in old["settings"]["index"]


def test_stored_vectors_are_read_from_source_or_from_script_fields() -> None:
    from osneural.mappings.stored_vectors import read_vector, request_parts, vector_fields

    mappings = {"_source": {"excludes": ["fde", "mv_codes"]}, "properties": {
        "dense": {"type": "knn_vector", "dimension": 2},
        "fde": {"type": "knn_vector", "dimension": 3, "data_type": "byte"},
        "mv_codes": {"type": "binary"}}}
    fields = vector_fields(mappings)
    assert set(fields) == {"dense", "fde"}
    assert fields["dense"].in_source and not fields["fde"].in_source and fields["fde"].byte
    source, scripts = request_parts(fields, ["dense", "fde"])
    assert source == ["dense"] and list(scripts) == ["fde"]
    with pytest.raises(ValueError, match="mv_codes"):
        request_parts(fields, ["mv_codes"])
    hit = {"_source": {"dense": [0.5, -0.25]}, "fields": {"fde": [-128, 0, 127]}}
    assert read_vector(hit, fields["dense"]) == [0.5, -0.25]
    assert read_vector(hit, fields["fde"]) == [-128, 0, 127]
    assert read_vector({"fields": {"fde": []}}, fields["fde"]) is None  # a document without one
    assert read_vector({"fields": {}}, fields["fde"]) is None
    assert read_vector({"_source": {}}, fields["dense"]) is None
    floats = vector_fields({"_source": {"enabled": False}, "properties": {
        "dense": {"type": "knn_vector", "dimension": 2}}})["dense"]
    assert not floats.in_source
    assert read_vector({"fields": {"dense": [1, 2.5]}}, floats) == [1.0, 2.5]

"""recode_binary against the real node: new MIH cut from stored dense vectors, no encoder pass."""

from __future__ import annotations

import numpy as np
import pytest
from osneural.ingest.codec_store import delete_codecs, load_codecs
from osneural.ingest.documents import unb64
from osneural.ingest.indexer import index_corpus, index_options
from osneural.ingest.recode import recode_binary
from osneural.mappings.stored_vectors import read_vector, request_parts, vector_fields
from test_ingest_fakes import fake_encoders

from osneural.codecs import code_tokens

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("derived_source", [None, True], ids=["default", "derived-source-on"])
def test_recode_binary_rewrites_tokens_codecs_and_meta(opensearch_client, index_name,
                                                       derived_source):
    """Both layouts: vectors out of `_source` (the default: read back through a script field)
    and the k-NN derived source kept on by the user (vectors in `_source`)."""
    docs = [{"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 4}"}
            for i in range(20)]
    settings = {} if derived_source is None else {"knn.derived_source.enabled": derived_source}
    index_corpus(opensearch_client, docs, index_name, representations="dense,binary,multivector",
                 encoders=fake_encoders(), progress=False,
                 options=index_options(index_settings=settings))
    mapping = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]
    vectors = vector_fields(mapping)
    # by default kept out of _source with the token codes; the user's derived source keeps them in
    assert vectors["dense"].in_source == vectors["fde"].in_source == bool(derived_source)
    source, scripts = request_parts(vectors, ["dense", "fde"])
    body = {"size": 100, "_source": [*source, "bin_tokens"], "script_fields": scripts,
            "docvalue_fields": ["bin_code", "mv_codes"]}
    before_hits = opensearch_client.search(index=index_name, body=body)["hits"]["hits"]
    mv_before = {h["_id"]: h["fields"]["mv_codes"] for h in before_hits}
    vec_before = {h["_id"]: (read_vector(h, vectors["dense"]), read_vector(h, vectors["fde"]))
                  for h in before_hits}
    try:
        before = load_codecs(opensearch_client, index_name)
        assert before.params["mih_m"] != 8
        assert recode_binary(opensearch_client, index_name, 8) == len(docs)
        bundle = load_codecs(opensearch_client, index_name)
        assert bundle.params["mih_m"] == 8
        meta = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]
        assert meta["osneural"]["codecs"]["params"]["mih_m"] == 8
        hits = opensearch_client.search(index=index_name, body=body)["hits"]["hits"]
        assert len(hits) == len(docs)
        for hit in hits:
            # fields kept out of _source survive the partial update
            assert hit["fields"]["mv_codes"] == mv_before[hit["_id"]]
            dense, fde = read_vector(hit, vectors["dense"]), read_vector(hit, vectors["fde"])
            assert (dense, fde) == vec_before[hit["_id"]] and dense is not None
            code = bundle.binary.encode(np.asarray([dense], dtype=np.float32))
            assert hit["_source"]["bin_tokens"] == code_tokens(code, 8, n_bits=bundle.binary.n_bits)[0]
            assert np.array_equal(unb64(hit["fields"]["bin_code"][0]), code[0])
        with pytest.raises(ValueError, match="mih_m must lie in"):
            recode_binary(opensearch_client, index_name, 0)
    finally:
        delete_codecs(opensearch_client, index_name)

"""The SEISMIC sparse stage (neural-search's sparse_vector field) against a real node.

One module-scoped node with neural-search (started through the launcher, or the running node
named by `OSNEURAL_NEURAL_SEARCH_URL`). A small corpus is ingested with the default SPLADE
encoder, its weights are copied to the `-sparse-ann` companion index with an
`approximate_threshold` below the (force-merged, single) segment's size so SEISMIC's clustered
postings are what answers, and the `sparse` stage with `method: seismic` must find the same top
documents as the exact `rank_features` stage over the same weights. The node without the plugin
(the session's) must be refused with a message that says what to install.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from osneural.ingest.indexer import index_corpus
from osneural.ingest.sparse_ann import build_sparse_ann
from osneural.mappings.sparse_ann import SeismicParams, companion_index, seismic_index_body
from osneural.plugin.sparse_ann import (
    SparseAnnUnavailable,
    check_cluster,
    seismic_query,
    token_ids,
)

# --------------------------------------------------------------------------- no node


def test_query_body_is_neural_sparse_with_raw_tokens() -> None:
    body = seismic_query("sparse_ann", {"7": 0.5, "2001": 1.5, "9": 0.1}, 40,
                         top_n=8, heap_factor=1.2, max_terms=2)
    assert body == {"neural_sparse": {"sparse_ann": {
        "query_tokens": {"2001": 1.5, "7": 0.5},
        "method_parameters": {"k": 40, "top_n": 8, "heap_factor": 1.2}}}}
    with pytest.raises(ValueError, match="no positive-weight"):
        seismic_query("sparse_ann", {}, 10)


def test_token_ids_use_the_vocabulary_and_name_an_unknown_token() -> None:
    vocab = {"heart": 2540, "##ing": 2075}
    assert token_ids({"heart": 1.0, "##ing": 0.25, "x": 0.0}, {**vocab, "x": 1}) == {
        "2540": 1.0, "2075": 0.25}
    with pytest.raises(ValueError, match="'lung' is not in the sparse encoder's vocabulary"):
        token_ids({"lung": 1.0}, vocab, where="first_stages (sparse)")


def test_mapping_and_parameters() -> None:
    body = seismic_index_body(SeismicParams(approximate_threshold=10, n_postings=50))
    assert body["settings"]["index"]["sparse"] is True
    field = body["mappings"]["properties"]["sparse_ann"]
    assert field["type"] == "sparse_vector" and field["method"]["name"] == "seismic"
    assert field["method"]["parameters"]["approximate_threshold"] == 10
    assert field["method"]["parameters"]["n_postings"] == 50
    assert "n_postings" not in SeismicParams().parameters()  # neural-search's own default
    for bad in ({"cluster_ratio": 1.0}, {"approximate_threshold": -1}, {"n_postings": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SeismicParams(**bad)
    assert companion_index("docs") == "docs-sparse-ann"


def test_spec_accepts_seismic_and_rejects_bad_knobs() -> None:
    from osneural.plugin.spec import parse_spec

    spec = parse_spec({"first_stages": [{"type": "sparse", "method": "seismic", "top_n": 10,
                                         "heap_factor": 1.5}]})
    stage = spec.first_stages[0]
    assert stage.method == "seismic" and stage.top_n == 10 and stage.heap_factor == 1.5
    for bad in ({"method": "hnsw"}, {"heap_factor": 0}, {"top_n": 0}):
        with pytest.raises(Exception, match=next(iter(bad))):
            parse_spec({"first_stages": [{"type": "sparse", **bad}]})


def test_stage_query_sends_the_measured_defaults_unless_the_spec_sets_them() -> None:
    from types import SimpleNamespace

    from osneural.plugin.sparse_ann import DEFAULT_HEAP_FACTOR, DEFAULT_TOP_N, stage_query
    from osneural.plugin.spec import parse_spec

    class Encoder:  # the vocabulary cache keys encoders weakly
        tokenizer = SimpleNamespace(get_vocab=lambda with_added_tokens=True: {"heart": 7, "lung": 9})

    encoder = Encoder()
    weights = {"heart": 1.0, "lung": 0.5}

    def params(**knobs: float) -> dict:
        stage = parse_spec({"first_stages": [{"type": "sparse", "method": "seismic",
                                              **knobs}]}).first_stages[0]
        body = stage_query(stage, weights, encoder, None, "first_stages (sparse)")
        return body["neural_sparse"]["sparse_ann"]["method_parameters"]

    assert (DEFAULT_TOP_N, DEFAULT_HEAP_FACTOR) == (40, 1.5)
    assert params() == {"k": 100, "top_n": 40, "heap_factor": 1.5}
    assert params(top_n=10, heap_factor=1.0) == {"k": 100, "top_n": 10, "heap_factor": 1.0}


# --------------------------------------------------------------------------- real nodes

WORDS = ["heart", "insulin", "protein", "cancer", "tumor", "gene", "receptor", "blood", "pressure", "diabetes", "kidney", "liver", "brain", "neuron", "vaccine", "virus", "infection", "immune", "cell", "membrane", "enzyme", "hormone", "obesity", "diet", "exercise", "sleep", "memory", "stress", "inflammation", "antibody", "therapy", "drug", "dose", "trial", "mortality", "risk", "children", "pregnancy", "bone", "muscle", "lung", "asthma", "smoking", "alcohol", "vitamin", "calcium", "iron", "glucose", "lipid", "cholesterol", "artery", "stroke", "dementia", "depression"]
N_DOCS = 400


def _corpus() -> list[dict[str, str]]:
    rng = random.Random(7)
    docs = []
    for i in range(N_DOCS):
        topic = rng.sample(WORDS, 3)
        words = topic * 3 + rng.sample(WORDS, 8)
        rng.shuffle(words)
        docs.append({"_id": f"s{i}", "title": " ".join(topic),
                     "text": "Study of " + " ".join(words) + "."})
    return docs


@pytest.fixture(scope="module")
def ns_client():
    """A client of a node with neural-search (>= 3.3)."""
    from osneural.connection import ClusterConfig

    url = os.environ.get("OSNEURAL_NEURAL_SEARCH_URL")
    cluster = None
    if not url:
        from osneural.node.launcher import LocalCluster, spread_port_start

        root = Path(tempfile.mkdtemp(prefix="osneural-test-sparse-ann-", dir="/tmp"))
        root.chmod(0o755)
        cluster = LocalCluster(name=f"test-ann-{os.getpid()}", http_port=spread_port_start(),
                               root=root, heap="1g", plugins=("neural-search",), auto_ports=True)
        try:
            url = cluster.start()
        except Exception as exc:  # noqa: BLE001 - reported the way conftest reports it
            shutil.rmtree(root, ignore_errors=True)
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"no OpenSearch node with neural-search in CI: {exc}")
            pytest.skip(f"no OpenSearch node with neural-search: {exc}")
    client = ClusterConfig.from_values(url).client()
    client.transport.timeout = 300
    yield client
    client.close()
    if cluster is not None:
        cluster.destroy()


@pytest.fixture(scope="module")
def seismic_index(ns_client):
    name = f"test-ann-{uuid.uuid4().hex[:8]}"
    index_corpus(ns_client, _corpus(), name, ["text", "sparse"], batch_size=64, progress=False)
    # every posting list kept whole (n_postings >= N_DOCS), so what SEISMIC may lose is only
    # what its cluster summaries prune; the threshold is below the merged segment's size
    params = SeismicParams(approximate_threshold=100, n_postings=N_DOCS, cluster_ratio=0.1,
                           quantization_ceiling_ingest=4.0)
    summary = build_sparse_ann(ns_client, name, params)
    yield name, summary
    ns_client.indices.delete(index=[name, companion_index(name)], ignore_unavailable=True)
    from osneural.codecs.bundle import CODECS_INDEX

    ns_client.delete(index=CODECS_INDEX, id=name, ignore=404)


def test_companion_holds_every_document_in_one_segment(ns_client, seismic_index) -> None:
    name, summary = seismic_index
    assert summary.written == N_DOCS and summary.skipped == 0
    comp = companion_index(name)
    assert ns_client.count(index=comp)["count"] == N_DOCS
    segs = ns_client.indices.segments(index=comp)["indices"][comp]["shards"]["0"][0]["segments"]
    assert len(segs) == 1 and next(iter(segs.values()))["num_docs"] == N_DOCS >= 100
    mapping = ns_client.indices.get_mapping(index=comp)[comp]["mappings"]["properties"]
    assert mapping["sparse_ann"]["type"] == "sparse_vector"


@pytest.mark.parametrize("mode", ["model", "inference_free"])
def test_seismic_stage_agrees_with_exact_rank_features(ns_client, seismic_index, mode) -> None:
    from osneural.plugin.searcher import Searcher

    name, _ = seismic_index
    rng = random.Random(11)
    queries = [" ".join(rng.sample(WORDS, 2)) for _ in range(20)]
    searcher = Searcher(ns_client, name)
    try:
        recalls = []
        for q in queries:
            exact = searcher.search(q, {"first_stages": [{"type": "sparse", "k": 10, "mode": mode}],
                                        "size": 10})
            ann = searcher.search(q, {"first_stages": [{"type": "sparse", "k": 10, "mode": mode,
                                                        "method": "seismic"}], "size": 10})
            a = [h["_id"] for h in exact["hits"]["hits"]]
            b = [h["_id"] for h in ann["hits"]["hits"]]
            assert len(a) == 10 and len(b) == 10, q
            assert ann["hits"]["hits"][0]["_index"] == name  # hits come back from the main index
            recalls.append(len(set(a) & set(b)) / 10)
    finally:
        searcher.close()
    assert sum(recalls) / len(recalls) >= 0.9, recalls


def test_seismic_stage_refuses_a_filter(ns_client, seismic_index) -> None:
    from osneural.plugin.searcher import Searcher

    name, _ = seismic_index
    searcher = Searcher(ns_client, name)
    try:
        with pytest.raises(Exception, match="cannot apply the spec's filter"):
            searcher.search("heart", {"first_stages": [{"type": "sparse", "method": "seismic"}],
                                      "filter": {"term": {"title": "heart"}}})
    finally:
        searcher.close()


def test_a_cluster_without_neural_search_is_refused(opensearch_client, opensearch_url,
                                                    tmp_path, capsys) -> None:
    from osneural.cli import main as cli_main

    plugins = {r["component"] for r in opensearch_client.cat.plugins(format="json")}
    assert "opensearch-neural-search" not in plugins  # the session node is the plain one
    with pytest.raises(SparseAnnUnavailable, match="--plugins neural-search"):
        check_cluster(opensearch_client)
    with pytest.raises(SparseAnnUnavailable, match="neural-search"):
        build_sparse_ann(opensearch_client, "any-index", vocab={})
    # the CLI refuses before it writes anything
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "heart"}\n', encoding="utf-8")
    name = f"test-ann-cli-{uuid.uuid4().hex[:8]}"
    rc = cli_main(["ingest", str(corpus), "--index", name, "--representations", "sparse",
                   "--sparse-ann", "--no-progress", "--url", opensearch_url])
    err = capsys.readouterr().err
    assert rc == 2 and "--sparse-ann" in err and "--plugins neural-search" in err
    assert not opensearch_client.indices.exists(index=name)


def test_the_threshold_switches_seismic_on(ns_client, seismic_index) -> None:
    """Proof that the approximate path answers: with posting lists cut to 3 documents, a
    segment above `approximate_threshold` loses most exact top-10 documents, and the same cut
    on a segment below the threshold (scored exactly) loses none. Restores the companion."""
    from osneural.plugin.searcher import Searcher

    name, _ = seismic_index
    rng = random.Random(5)
    queries = [" ".join(rng.sample(WORDS, 2)) for _ in range(10)]

    def recall(params: SeismicParams) -> float:
        build_sparse_ann(ns_client, name, params, recreate=True)
        searcher = Searcher(ns_client, name)
        try:
            hits = 0
            for q in queries:
                spec = {"first_stages": [{"type": "sparse", "k": 10}], "size": 10}
                a = [h["_id"] for h in searcher.search(q, spec)["hits"]["hits"]]
                spec["first_stages"][0]["method"] = "seismic"
                b = [h["_id"] for h in searcher.search(q, spec)["hits"]["hits"]]
                hits += len(set(a) & set(b))
            return hits / (10 * len(queries))
        finally:
            searcher.close()

    try:
        assert recall(SeismicParams(approximate_threshold=10 * N_DOCS, n_postings=3)) == 1.0
        assert recall(SeismicParams(approximate_threshold=100, n_postings=3)) < 0.8
    finally:
        build_sparse_ann(ns_client, name, SeismicParams(approximate_threshold=100,
                                                        n_postings=N_DOCS), recreate=True)

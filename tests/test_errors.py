"""One exception root: every error osneural raises on purpose is an `OsneuralError`, keeps the
builtin it used to be (so `except ValueError` call sites still catch it), and carries its data as
attributes."""

from __future__ import annotations

import importlib

import pytest

from osneural import errors

#: (module, class name, builtin it must still be) for every public exception class
PUBLIC = [
    ("osneural.plugin.spec", "SpecError", ValueError),
    ("osneural.plugin.resources", "StageError", ValueError),
    ("osneural.plugin.resources", "IndexMismatchError", ValueError),
    ("osneural.plugin.resources", "StaleCodecsError", ValueError),
    ("osneural.plugin.searcher", "SearchError", RuntimeError),
    ("osneural.plugin.stages", "PartialResultsError", RuntimeError),
    ("osneural.plugin.request_guard", "GuardError", Exception),
    ("osneural.ingest.plan", "IngestError", RuntimeError),
    ("osneural.ingest.plan", "IndexMismatch", RuntimeError),
    ("osneural.ingest.plan", "EmptyCorpus", RuntimeError),
    ("osneural.ingest.indexer", "IngestError", RuntimeError),
    ("osneural.ingest.bulk", "ClusterUnavailable", RuntimeError),
    ("osneural.ingest.corpus", "CorpusError", ValueError),
    ("osneural.ingest.source_index", "SourceError", RuntimeError),
    ("osneural.eval.tune", "TuneError", ValueError),
    ("osneural.eval.tune", "HeldOutLeakError", RuntimeError),
    ("osneural.eval.report", "ResultFileError", ValueError),
    ("osneural.eval.beir", "EvalDataError", ValueError),
    ("osneural.node.errors", "NodeError", RuntimeError),
    ("osneural.node.launcher", "PortBindError", RuntimeError),
    ("osneural.connection", "ClusterConfigError", ValueError),
    ("osneural.encoders.errors", "EncoderError", Exception),
    ("osneural.encoders.errors", "CheckpointError", Exception),
    ("osneural.encoders.errors", "ExportError", Exception),
    ("osneural.encoders.errors", "ModelNotFoundError", FileNotFoundError),
    ("osneural.encoders.errors", "EncoderInputError", ValueError),
    ("osneural.encoders.registry", "RegistryError", Exception),
    ("osneural.encoders.registry", "MLCommonsSettingsError", Exception),
    ("osneural.codecs.bundle", "CodecError", ValueError),
]


@pytest.mark.parametrize(("module", "name", "builtin"), PUBLIC,
                         ids=[f"{m}.{n}" for m, n, _ in PUBLIC])
def test_every_public_error_has_one_root_and_keeps_its_builtin(module, name, builtin) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, errors.OsneuralError)
    assert issubclass(cls, builtin)


def test_twin_names_are_one_class() -> None:
    from osneural.ingest.plan import IndexMismatch
    from osneural.plugin.resources import IndexMismatchError

    assert IndexMismatch is IndexMismatchError is errors.IndexMismatchError
    # raised by ingestion and by queries alike: both sides' handlers catch it
    assert issubclass(IndexMismatch, errors.IngestError)
    assert issubclass(IndexMismatch, errors.StageError)


def test_errors_carry_their_data() -> None:
    exc = errors.IndexMismatchError("built with another encoder", index="docs",
                                     expected="ab12", found="cd34")
    assert (exc.index, exc.expected, exc.found, exc.summary) == ("docs", "ab12", "cd34", None)
    assert str(exc) == "built with another encoder"
    stale = errors.StaleCodecsError("generation differs", index="docs", expected="g1", found="g2")
    assert stale.status == 409 and stale.expected == "g1"
    search = errors.SearchError("every first stage failed", 504)
    assert search.status == 504
    partial = errors.PartialResultsError("search", 2, 5, ["node_disconnected"])
    assert (partial.what, partial.failed, partial.total, partial.reasons) == (
        "search", 2, 5, ("node_disconnected",))
    assert str(partial) == "search: 2 of 5 shards failed (node_disconnected)"
    guard = errors.GuardError(413, "osneural_request_too_large", "too big")
    assert (guard.status, guard.kind, guard.reason, str(guard)) == (
        413, "osneural_request_too_large", "too big", "too big")
    from osneural.ingest.bulk import BulkResult, ClusterUnavailable

    result = BulkResult(indexed=0)
    assert ClusterUnavailable("batch failed", result).result is result


def test_shard_failures_raise_partial_results_with_their_counts() -> None:
    from osneural.plugin.stages import complete

    resp = {"_shards": {"total": 3, "failed": 1,
                        "failures": [{"reason": {"type": "node_not_connected_exception"}}]}}
    with pytest.raises(errors.PartialResultsError) as info:
        complete(resp, "search")
    assert (info.value.failed, info.value.total) == (1, 3)
    assert "node_not_connected_exception" in str(info.value)


def test_bad_codec_bundle_is_a_codec_error_and_a_value_error() -> None:
    from osneural.codecs import CodecBundle

    with pytest.raises(errors.CodecError, match="unknown slot 'nope'"):
        CodecBundle.from_dict({"kind": "bundle", "version": CodecBundle().to_dict()["version"],
                               "codecs": {"nope": {}}})
    with pytest.raises(ValueError, match="not a codec bundle"):
        CodecBundle.from_dict({"kind": "other"})


def test_spec_errors_are_caught_by_the_root_and_by_value_error() -> None:
    from osneural.plugin.spec import parse_spec

    with pytest.raises(errors.OsneuralError, match=r"first_stages\[0\]\.k"):
        parse_spec({"first_stages": [{"type": "bm25", "k": 0}]})
    with pytest.raises(ValueError):
        parse_spec({"first_stages": [{"type": "bm25", "k": 0}]})
